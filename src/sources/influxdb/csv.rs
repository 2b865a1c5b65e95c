//! CSV as InfluxDB writes it: RFC 4180 records, and the v1 `/query` layout.
//!
//! v1 (`Accept: application/csv`): a header `name,tags,time,<columns>`, then
//! rows; a blank line and a new header whenever the series' columns change.
//! Our queries ask for `field::field, tag::tag...`, so the value is column 4
//! and the tags follow in order; time is an integer in nanoseconds.

use super::InfluxErrorKind;
use crate::sources::{Point, TagCache};

/// Splits one CSV record (no embedded newlines) into fields, unquoting.
pub fn split_record(line: &str, out: &mut Vec<String>) -> Result<(), String> {
    out.clear();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == ',' {
            out.push(std::mem::take(&mut field));
            at_start = true;
        } else {
            field.push(c);
            at_start = false;
        }
    }
    if quoted {
        return Err(format!(
            "unterminated quote in `{}`",
            line.chars().take(80).collect::<String>()
        ));
    }
    out.push(field);
    Ok(())
}

/// Incremental parser of a v1 CSV response.
pub struct V1Csv {
    ntags: usize,
    want_header: bool,
    fields: Vec<String>,
    tags: TagCache,
}

impl V1Csv {
    pub fn new(ntags: usize) -> V1Csv {
        V1Csv {
            ntags,
            want_header: true,
            fields: Vec::new(),
            tags: TagCache::default(),
        }
    }

    /// A parser for data rows only (headers already removed).
    pub fn data_only(ntags: usize) -> V1Csv {
        V1Csv {
            want_header: false,
            ..V1Csv::new(ntags)
        }
    }

    /// One line of the body; a point when the line is a data row.
    pub fn line(&mut self, line: &str) -> Result<Option<Point>, InfluxErrorKind> {
        if line.is_empty() {
            self.want_header = true;
            return Ok(None);
        }
        if !self.want_header && !line.contains('"') {
            return self.plain_row(line);
        }
        split_record(line, &mut self.fields).map_err(InfluxErrorKind::Parse)?;
        if self.want_header {
            if self.fields.len() < 4 + self.ntags || self.fields[..3] != ["name", "tags", "time"] {
                return Err(InfluxErrorKind::Parse(format!(
                    "unexpected CSV header `{}`",
                    line.chars().take(120).collect::<String>()
                )));
            }
            self.want_header = false;
            return Ok(None);
        }
        if self.fields.len() < 4 + self.ntags {
            return Err(InfluxErrorKind::Parse(format!("short CSV row `{line}`")));
        }
        let time_ns: i64 = self.fields[2]
            .parse()
            .map_err(|_| InfluxErrorKind::Parse(format!("bad time `{}`", self.fields[2])))?;
        let raw = &self.fields[3];
        if raw.is_empty() {
            return Ok(None);
        }
        let value = parse_number(raw)?;
        let mut tags = Vec::with_capacity(self.ntags);
        for (i, t) in self.fields[4..4 + self.ntags].iter().enumerate() {
            tags.push(self.tags.get(i, t));
        }
        Ok(Some(Point {
            time_ns,
            tags,
            value,
        }))
    }

    /// The common row without quotes, parsed without allocating per field.
    fn plain_row(&mut self, line: &str) -> Result<Option<Point>, InfluxErrorKind> {
        let mut it = line.split(',');
        let short = || InfluxErrorKind::Parse(format!("short CSV row `{line}`"));
        it.next().ok_or_else(short)?; // name
        it.next().ok_or_else(short)?; // tags
        let t = it.next().ok_or_else(short)?;
        let time_ns: i64 = t
            .parse()
            .map_err(|_| InfluxErrorKind::Parse(format!("bad time `{t}`")))?;
        let raw = it.next().ok_or_else(short)?;
        if raw.is_empty() {
            return Ok(None);
        }
        let value = parse_number(raw)?;
        let mut tags = Vec::with_capacity(self.ntags);
        for i in 0..self.ntags {
            tags.push(self.tags.get(i, it.next().ok_or_else(short)?));
        }
        Ok(Some(Point {
            time_ns,
            tags,
            value,
        }))
    }
}

/// A numeric field value; booleans and strings are refused with the value shown.
pub fn parse_number(raw: &str) -> Result<f64, InfluxErrorKind> {
    raw.parse::<f64>().map_err(|_| {
        InfluxErrorKind::Parse(format!(
            "value `{}` is not numeric",
            raw.chars().take(40).collect::<String>()
        ))
    })
}

/// Offset just after the newline that ends the last data row before a blank
/// line (`\n\n` or `\n\r\n`), if any.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    if bytes.first() == Some(&b'\n') || bytes.starts_with(b"\r\n") {
        return Some(0);
    }
    bytes
        .windows(2)
        .position(|w| w == b"\n\n" || w == b"\n\r")
        .map(|i| i + 1)
}

/// Splits a v1 CSV body into chunks of data rows for DuckDB's CSV reader:
/// checks each header (it may repeat after a blank line when a new series
/// starts) and keeps only data lines.
pub struct V1Chunker {
    ntags: usize,
    want_header: bool,
    fields: Vec<String>,
    pub buf: Vec<u8>,
}

impl V1Chunker {
    pub fn new(ntags: usize) -> V1Chunker {
        V1Chunker {
            ntags,
            want_header: true,
            fields: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Takes every complete line of `bytes`; returns how many bytes it used.
    /// Between headers, whole runs of data rows are copied at once: a header
    /// can only follow a blank line.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, InfluxErrorKind> {
        let Some(last_nl) = bytes.iter().rposition(|&b| b == b'\n') else {
            return Ok(0);
        };
        let complete = &bytes[..=last_nl];
        let mut at = 0;
        while at < complete.len() {
            if !self.want_header {
                // Data rows up to the next blank line (or the end).
                let run_end = find_blank_line(&complete[at..])
                    .map(|i| at + i)
                    .unwrap_or(complete.len());
                if run_end > at {
                    self.buf.extend_from_slice(&complete[at..run_end]);
                    at = run_end;
                    continue;
                }
            }
            let nl = complete[at..]
                .iter()
                .position(|&b| b == b'\n')
                .expect("complete lines")
                + at;
            let line = &complete[at..nl];
            self.line(line.strip_suffix(b"\r").unwrap_or(line))?;
            at = nl + 1;
        }
        Ok(complete.len())
    }

    pub fn line(&mut self, line: &[u8]) -> Result<(), InfluxErrorKind> {
        if line.is_empty() {
            self.want_header = true;
            return Ok(());
        }
        if self.want_header {
            let text = std::str::from_utf8(line)
                .map_err(|_| InfluxErrorKind::Parse("response is not UTF-8".into()))?;
            split_record(text, &mut self.fields).map_err(InfluxErrorKind::Parse)?;
            if self.fields.len() != 4 + self.ntags || self.fields[..3] != ["name", "tags", "time"] {
                return Err(InfluxErrorKind::Parse(format!(
                    "unexpected CSV header `{}`",
                    text.chars().take(120).collect::<String>()
                )));
            }
            self.want_header = false;
            return Ok(());
        }
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let mut v = Vec::new();
        split_record(r#"a,"b,c","d ""q""",,e"#, &mut v).unwrap();
        assert_eq!(v, ["a", "b,c", "d \"q\"", "", "e"]);
        assert!(split_record("\"open", &mut v).is_err());
    }

    #[test]
    fn v1_layout_with_header_changes() {
        let body = "name,tags,time,co,station\nair,,1700000000000000000,1,\"St 1, North\"\nair,,1700000060000000000,0.25,\n\nname,tags,time,co,station\nair,,1700000120000000000,2,B\n";
        let mut p = V1Csv::new(1);
        let pts: Vec<Point> = body.lines().filter_map(|l| p.line(l).unwrap()).collect();
        assert_eq!(
            pts,
            vec![
                Point {
                    time_ns: 1_700_000_000_000_000_000,
                    tags: vec![Some("St 1, North".into())],
                    value: 1.0
                },
                Point {
                    time_ns: 1_700_000_060_000_000_000,
                    tags: vec![None],
                    value: 0.25
                },
                Point {
                    time_ns: 1_700_000_120_000_000_000,
                    tags: vec![Some("B".into())],
                    value: 2.0
                },
            ]
        );
    }

    #[test]
    fn chunker_keeps_only_data_rows_and_checks_headers() {
        let mut c = V1Chunker::new(1);
        for l in [
            "name,tags,time,co,station",
            "air,,1,1,A",
            "",
            "name,tags,time,co,station",
            "air,,2,2,\"B, c\"",
        ] {
            c.line(l.as_bytes()).unwrap();
        }
        assert_eq!(c.buf, b"air,,1,1,A\nair,,2,2,\"B, c\"\n");
        // The same body fed in arbitrary pieces, as the network delivers it.
        let body = b"name,tags,time,co,station\nair,,1,1,A\nair,,3,3,A\n\nname,tags,time,co,station\nair,,2,2,\"B, c\"\n";
        for cut in 1..body.len() {
            let mut c = V1Chunker::new(1);
            let mut carry = body[..cut].to_vec();
            let used = c.feed(&carry).unwrap();
            carry.drain(..used);
            carry.extend_from_slice(&body[cut..]);
            let used = c.feed(&carry).unwrap();
            assert_eq!(used, carry.len());
            assert_eq!(
                c.buf, b"air,,1,1,A\nair,,3,3,A\nair,,2,2,\"B, c\"\n",
                "cut at {cut}"
            );
        }
        let mut c = V1Chunker::new(1);
        assert!(c.line(b"name,tags,time,co").is_err());
    }

    #[test]
    fn v1_rejects_non_numeric_and_bad_header() {
        let mut p = V1Csv::new(0);
        p.line("name,tags,time,co").unwrap();
        assert!(p
            .line("air,,1,true")
            .unwrap_err()
            .to_string()
            .contains("`true` is not numeric"));
        let mut p = V1Csv::new(0);
        assert!(p.line("<html>").is_err());
    }
}
