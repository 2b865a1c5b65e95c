//! InfluxDB v2 `/api/v2/query` (Flux) and its annotated CSV.
//!
//! A response is a sequence of tables. Each schema starts with annotation rows
//! (`#datatype`, `#group`, `#default`) and a header row whose first cell is
//! empty; a blank line separates schemas. A table with `error` and
//! `reference` columns reports a query failure. Columns are found by name
//! (`_time`, `_value` or the pivoted fields, the tags), so their order does
//! not matter; a pivoted field a table lacks is a field its points lack.

use chrono::DateTime;

use super::csv::{parse_number, split_record};
use super::{for_each_line, status_error, transport, Conn, InfluxErrorKind};
use crate::sources::columns::MISSING;
use crate::sources::{Fetch, Point, PointSink, TagCache};

/// Incremental parser of annotated CSV.
pub struct AnnotatedCsv {
    tags: Vec<String>,
    /// The value columns' names: `_value`, or the fields when pivoted.
    values: Vec<String>,
    datatypes: Vec<String>,
    /// Column positions of the current schema: time, value, tags.
    layout: Option<Layout>,
    error_table: bool,
    fields: Vec<String>,
    cache: TagCache,
}

struct Layout {
    time: usize,
    /// Position and `#datatype` of each value column the table has.
    values: Vec<Option<(usize, String)>>,
    tags: Vec<Option<usize>>,
}

impl AnnotatedCsv {
    /// A parser of one field's `_value`, with `tags`.
    pub fn new(tags: &[String]) -> AnnotatedCsv {
        AnnotatedCsv::with_values(tags, &["_value".to_owned()])
    }

    /// The answer to `fetch`'s query (`query::flux`).
    pub fn for_fetch(fetch: &Fetch) -> AnnotatedCsv {
        if fetch.fields.len() == 1 {
            AnnotatedCsv::new(&fetch.tags)
        } else {
            AnnotatedCsv::with_values(&fetch.tags, &fetch.fields)
        }
    }

    fn with_values(tags: &[String], values: &[String]) -> AnnotatedCsv {
        AnnotatedCsv {
            tags: tags.to_vec(),
            values: values.to_vec(),
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
        let mut values = Vec::with_capacity(l.values.len());
        for (k, v) in l.values.iter().enumerate() {
            let Some((i, ty)) = v else {
                values.push(MISSING);
                continue;
            };
            let raw = get(*i);
            if raw.is_empty() {
                values.push(MISSING);
                continue;
            }
            if !matches!(ty.as_str(), "double" | "long" | "unsignedLong" | "") {
                return Err(InfluxErrorKind::Parse(format!(
                    "{} has type {ty}, not a number",
                    self.values[k]
                )));
            }
            values.push(parse_number(raw)?);
        }
        if values.iter().all(|v| v.is_nan()) {
            return Ok(None);
        }
        let mut tags = Vec::with_capacity(l.tags.len());
        for (c, i) in l.tags.iter().enumerate() {
            tags.push(i.and_then(|i| self.cache.get(c, get(i))));
        }
        Ok(Some(Point {
            time_ns,
            tags,
            values,
        }))
    }

    fn header(&mut self) -> Result<(), InfluxErrorKind> {
        let pos = |name: &str| self.fields.iter().position(|f| f == name);
        if pos("error").is_some() && pos("reference").is_some() {
            self.error_table = true;
            return Ok(());
        }
        let values: Vec<Option<(usize, String)>> = self
            .values
            .iter()
            .map(|v| pos(v).map(|i| (i, self.datatypes.get(i).cloned().unwrap_or_default())))
            .collect();
        let (Some(time), true) = (pos("_time"), values.iter().any(Option::is_some)) else {
            return Err(InfluxErrorKind::Parse(format!(
                "table without _time and {}: `{}`",
                self.values.join(", "),
                self.fields.join(",")
            )));
        };
        let tags = self.tags.iter().map(|t| pos(t)).collect();
        self.layout = Some(Layout { time, values, tags });
        Ok(())
    }
}

/// Runs a count query (`query::flux_count`): the sum of its `_value`s.
pub(crate) async fn count(conn: &Conn, org: &str, flux: &str) -> Result<u64, InfluxErrorKind> {
    count_of(&super::body_text(send(conn, org, flux).await?).await?)
}

/// The sum of the `_value`s of an annotated CSV answer (0 for none). Its
/// tables have no `_time` (`count()` drops it), so not `AnnotatedCsv`.
fn count_of(body: &str) -> Result<u64, InfluxErrorKind> {
    let mut fields = Vec::new();
    let (mut value, mut error) = (None, false);
    let mut n = 0u64;
    for line in body.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            (value, error) = (None, false);
            continue;
        }
        split_record(line, &mut fields).map_err(InfluxErrorKind::Parse)?;
        if fields[0].starts_with('#') {
            continue;
        }
        let pos = |name: &str| fields.iter().position(|f| f == name);
        match (value, error) {
            (None, false) => {
                error = pos("error").is_some() && pos("reference").is_some();
                value = pos("_value");
                if value.is_none() && !error {
                    return Err(InfluxErrorKind::Parse(format!(
                        "count answer without _value: `{line}`"
                    )));
                }
            }
            (_, true) => {
                return Err(InfluxErrorKind::Query(
                    fields.get(1).cloned().unwrap_or_default(),
                ))
            }
            (Some(i), false) => {
                let raw = fields.get(i).map(String::as_str).unwrap_or("");
                if !raw.is_empty() {
                    n += parse_number(raw)? as u64;
                }
            }
        }
    }
    Ok(n)
}

async fn send(conn: &Conn, org: &str, flux: &str) -> Result<reqwest::Response, InfluxErrorKind> {
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
    Ok(resp)
}

/// Runs one Flux query and streams its rows into `out`.
pub(crate) async fn fetch(
    conn: &Conn,
    org: &str,
    flux: &str,
    fetch: &Fetch,
    out: &mut PointSink,
) -> Result<(), InfluxErrorKind> {
    let resp = send(conn, org, flux).await?;
    let mut parser = AnnotatedCsv::for_fetch(fetch);
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
                Point::one(t, vec![Some("A".into()), Some("east".into())], 15.43),
                Point::one(t, vec![Some("B".into()), Some("east".into())], 59.25),
                Point::one(t, vec![Some("C".into()), Some("east".into())], 52.62),
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
            Point::one(base + 120_000_000_000, vec![Some("muenchen".into())], 7.0)
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

    /// `v2_pivoted.csv` follows the same annotated-CSV rules for the answer
    /// to a shared query (`pivot` on `_field`): a column per field, a null
    /// left empty, and a table that lacks a field's column (a station that
    /// had none of it in the range). Written from the documented format,
    /// not captured.
    #[test]
    fn pivoted_fields_each_in_their_column() {
        let f = Fetch {
            measurement: "air".into(),
            tags: vec!["station".into()],
            fields: vec!["co".into(), "no2".into()],
        };
        let mut p = AnnotatedCsv::for_fetch(&f);
        let pts: Vec<Point> = include_str!("../../../tests/fixtures/influxdb/v2_pivoted.csv")
            .split('\n')
            .filter_map(|l| p.line(l.trim_end_matches('\r')).unwrap())
            .collect();
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap()
        };
        let show: Vec<(i64, Option<String>, Vec<String>)> = pts
            .iter()
            .map(|p| {
                (
                    p.time_ns,
                    p.tags[0].as_deref().map(str::to_owned),
                    p.values.iter().map(|v| v.to_string()).collect(),
                )
            })
            .collect();
        let s = |x: &str| Some(x.to_owned());
        let v = |a: &str, b: &str| vec![a.to_owned(), b.to_owned()];
        assert_eq!(
            show,
            vec![
                (
                    t("2026-11-20T00:00:00Z"),
                    s("berlin-mitte"),
                    v("0.41", "21.5")
                ),
                (t("2026-11-20T00:01:00Z"), s("berlin-mitte"), v("NaN", "22")),
                (
                    t("2026-11-20T00:02:00Z"),
                    s("berlin-mitte"),
                    v("0.43", "NaN")
                ),
                (
                    t("2026-11-20T00:00:00Z"),
                    s("hamburg, sternschanze"),
                    v("0.38", "NaN")
                ),
            ]
        );
    }

    /// The answer to `query::flux_count`: one table (`group()`), one row
    /// (`sum()`), the points in `_value`; nothing at all for an empty range.
    /// Written from the documented annotated-CSV format, not captured.
    #[test]
    fn a_count_answer_sums_its_values() {
        let body = "#group,false,false,false\r\n#datatype,string,long,long\r\n#default,_result,,\r\n,result,table,_value\r\n,,0,1790\r\n\r\n";
        assert_eq!(count_of(body).unwrap(), 1790);
        assert_eq!(count_of("").unwrap(), 0);
        let err = include_str!("../../../tests/fixtures/influxdb/v2_error_docs.csv");
        assert!(count_of(err).is_err());
    }
}
