//! InfluxDB v2 `/api/v2/query` (Flux) and its annotated CSV.
//!
//! A response is a sequence of tables. Each schema starts with annotation rows
//! (`#datatype`, `#group`, `#default`) and a header row whose first cell is
//! empty; a blank line separates schemas. A table with `error` and
//! `reference` columns reports a query failure. Columns are found by name
//! (`_time`, `_value`, the tags), so their order does not matter.

use chrono::DateTime;

use super::csv::{parse_number, split_record};
use super::{for_each_line, status_error, transport, Conn, InfluxErrorKind};
use crate::sources::{Point, PointSink, TagCache};

/// Incremental parser of annotated CSV.
pub struct AnnotatedCsv {
    tags: Vec<String>,
    datatypes: Vec<String>,
    /// Column positions of the current schema: time, value, tags.
    layout: Option<Layout>,
    error_table: bool,
    fields: Vec<String>,
    cache: TagCache,
}

struct Layout {
    time: usize,
    value: usize,
    value_type: String,
    tags: Vec<Option<usize>>,
}

impl AnnotatedCsv {
    pub fn new(tags: &[String]) -> AnnotatedCsv {
        AnnotatedCsv {
            tags: tags.to_vec(),
            datatypes: Vec::new(),
            layout: None,
            error_table: false,
            fields: Vec::new(),
            cache: TagCache::default(),
        }
    }

    pub fn line(&mut self, line: &str) -> Result<Option<Point>, InfluxErrorKind> {
        if line.is_empty() {
            self.layout = None;
            self.error_table = false;
            self.datatypes.clear();
            return Ok(None);
        }
        split_record(line, &mut self.fields).map_err(InfluxErrorKind::Parse)?;
        if self.fields[0].starts_with('#') {
            if self.fields[0] == "#datatype" {
                self.datatypes = self.fields.clone();
            }
            return Ok(None);
        }
        if self.layout.is_none() && !self.error_table {
            return self.header().map(|_| None);
        }
        if self.error_table {
            let msg = self.fields.get(1).cloned().unwrap_or_default();
            return Err(InfluxErrorKind::Query(msg));
        }
        let l = self.layout.as_ref().expect("header seen");
        let get = |i: usize| self.fields.get(i).map(String::as_str).unwrap_or("");
        let t = get(l.time);
        let time_ns = DateTime::parse_from_rfc3339(t)
            .ok()
            .and_then(|d| d.timestamp_nanos_opt())
            .ok_or_else(|| InfluxErrorKind::Parse(format!("bad _time `{t}`")))?;
        let raw = get(l.value);
        if raw.is_empty() {
            return Ok(None);
        }
        if !matches!(
            l.value_type.as_str(),
            "double" | "long" | "unsignedLong" | ""
        ) {
            return Err(InfluxErrorKind::Parse(format!(
                "_value has type {}, not a number",
                l.value_type
            )));
        }
        let value = parse_number(raw)?;
        let mut tags = Vec::with_capacity(l.tags.len());
        for (c, i) in l.tags.iter().enumerate() {
            tags.push(i.and_then(|i| self.cache.get(c, get(i))));
        }
        Ok(Some(Point {
            time_ns,
            tags,
            value,
        }))
    }

    fn header(&mut self) -> Result<(), InfluxErrorKind> {
        let pos = |name: &str| self.fields.iter().position(|f| f == name);
        if pos("error").is_some() && pos("reference").is_some() {
            self.error_table = true;
            return Ok(());
        }
        let (Some(time), Some(value)) = (pos("_time"), pos("_value")) else {
            return Err(InfluxErrorKind::Parse(format!(
                "table without _time and _value: `{}`",
                self.fields.join(",")
            )));
        };
        let value_type = self.datatypes.get(value).cloned().unwrap_or_default();
        let tags = self.tags.iter().map(|t| pos(t)).collect();
        self.layout = Some(Layout {
            time,
            value,
            value_type,
            tags,
        });
        Ok(())
    }
}

/// Runs one Flux query and streams its rows into `out`.
pub(crate) async fn fetch(
    conn: &Conn,
    org: &str,
    flux: &str,
    tags: &[String],
    out: &mut PointSink,
) -> Result<(), InfluxErrorKind> {
    let body = serde_json::json!({
        "query": flux,
        "type": "flux",
        "dialect": {"header": true, "annotations": ["datatype", "group", "default"], "delimiter": ","},
    });
    let req = conn
        .authed(conn.http.post(format!("{}/api/v2/query", conn.base)))
        .query(&[("org", org)])
        .header("Accept", "application/csv")
        .json(&body);
    let resp = req.send().await.map_err(|e| transport(&e, conn.timeout))?;
    if !resp.status().is_success() {
        return Err(status_error(resp).await);
    }
    let mut parser = AnnotatedCsv::new(tags);
    for_each_line(resp, conn.timeout, out, |line, out| {
        if let Some(p) = parser.line(line)? {
            out.buffer(p);
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    //! No InfluxDB 2 server can run here: these parse response bodies kept as
    //! fixtures. `v2_annotated_docs.csv` and `v2_error_docs.csv` are the
    //! examples of InfluxData's "Annotated CSV" reference, byte for byte (with
    //! the CRLF line ends the HTTP API sends); `v2_schema_change.csv` follows
    //! the same rules with two schemas in one response.
    use super::*;

    fn parse(body: &str, tags: &[&str]) -> Result<Vec<Point>, InfluxErrorKind> {
        let tags: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
        let mut p = AnnotatedCsv::new(&tags);
        let mut out = Vec::new();
        for line in body.split('\n') {
            if let Some(pt) = p.line(line.trim_end_matches('\r'))? {
                out.push(pt);
            }
        }
        Ok(out)
    }

    #[test]
    fn documented_example() {
        let pts = parse(
            include_str!("../../../tests/fixtures/influxdb/v2_annotated_docs.csv"),
            &["host", "region"],
        )
        .unwrap();
        let t = DateTime::parse_from_rfc3339("2023-01-01T00:52:00Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        assert_eq!(
            pts,
            vec![
                Point {
                    time_ns: t,
                    tags: vec![Some("A".into()), Some("east".into())],
                    value: 15.43
                },
                Point {
                    time_ns: t,
                    tags: vec![Some("B".into()), Some("east".into())],
                    value: 59.25
                },
                Point {
                    time_ns: t,
                    tags: vec![Some("C".into()), Some("east".into())],
                    value: 52.62
                },
            ]
        );
    }

    #[test]
    fn documented_error_table() {
        let e = parse(
            include_str!("../../../tests/fixtures/influxdb/v2_error_docs.csv"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "query error: Failed to parse query");
    }

    #[test]
    fn schema_change_and_quoted_tags() {
        let pts = parse(
            include_str!("../../../tests/fixtures/influxdb/v2_schema_change.csv"),
            &["station"],
        )
        .unwrap();
        let base = DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        assert_eq!(pts.len(), 4);
        assert_eq!(pts[1].time_ns, base + 60_500_000_000);
        assert_eq!(pts[2].tags, vec![Some("hamburg, sternschanze".into())]);
        assert_eq!(
            pts[3],
            Point {
                time_ns: base + 120_000_000_000,
                tags: vec![Some("muenchen".into())],
                value: 7.0
            }
        );
    }

    #[test]
    fn string_values_are_refused() {
        let body = "#datatype,string,long,dateTime:RFC3339,string\n,result,table,_time,_value\n,,0,2026-11-20T00:00:00Z,high\n";
        assert!(parse(body, &[])
            .unwrap_err()
            .to_string()
            .contains("not a number"));
    }
}
