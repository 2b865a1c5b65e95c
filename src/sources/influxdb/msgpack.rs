//! MessagePack as InfluxDB 1.x writes a `/query` answer
//! (`Accept: application/x-msgpack`, `chunked=true`): one map per chunk,
//! back to back, `{results: [{statement_id, series: [{name, tags, columns,
//! values, partial}], partial, error}]}`.
//!
//! Our queries group by the tags (`query::influxql_grouped`), so a series
//! carries its tag values once, in `tags`, and a row is `[time, field...]`:
//! the time an integer in nanoseconds, a field a number, or nil where the
//! point lacks it. Numbers stay binary end to end: InfluxDB formats no
//! decimals and we parse none, which is most of what a CSV answer costs
//! both sides.
//!
//! The answer is read token by token as the network delivers it; a token a
//! piece cuts waits for the next piece. Map keys are matched by name; a
//! series must give its tags and columns before its rows, as InfluxDB writes
//! it. Anything else (`messages`, `partial`, a series' name) is skipped.

use rmp::Marker;

use super::InfluxErrorKind;
use crate::sources::columns::MISSING;
use crate::sources::Columns;

/// One MessagePack token: a scalar, or the header of a container.
#[derive(Debug)]
enum Tok<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a [u8]),
    Array(u32),
    Map(u32),
    /// Binary or extension data: nothing InfluxDB sends us.
    Other,
}

/// The token at the start of `b` and its length in bytes; `None` when `b`
/// ends inside it.
fn token(b: &[u8]) -> Result<Option<(Tok<'_>, usize)>, InfluxErrorKind> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    // `n` big-endian bytes after the marker.
    let be = |n: usize| -> Option<u64> {
        let bytes = b.get(1..1 + n)?;
        Some(bytes.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    };
    // A payload of `len` bytes after a header of `head` bytes.
    let payload = |head: usize, len: u64| -> Option<(&[u8], usize)> {
        let end = head.checked_add(usize::try_from(len).ok()?)?;
        Some((b.get(head..end)?, end))
    };
    let tok = match Marker::from_u8(first) {
        Marker::FixPos(n) => Some((Tok::UInt(u64::from(n)), 1)),
        Marker::FixNeg(n) => Some((Tok::Int(i64::from(n)), 1)),
        Marker::Null => Some((Tok::Nil, 1)),
        Marker::True => Some((Tok::Bool(true), 1)),
        Marker::False => Some((Tok::Bool(false), 1)),
        Marker::U8 => be(1).map(|v| (Tok::UInt(v), 2)),
        Marker::U16 => be(2).map(|v| (Tok::UInt(v), 3)),
        Marker::U32 => be(4).map(|v| (Tok::UInt(v), 5)),
        Marker::U64 => be(8).map(|v| (Tok::UInt(v), 9)),
        Marker::I8 => be(1).map(|v| (Tok::Int(i64::from(v as u8 as i8)), 2)),
        Marker::I16 => be(2).map(|v| (Tok::Int(i64::from(v as u16 as i16)), 3)),
        Marker::I32 => be(4).map(|v| (Tok::Int(i64::from(v as u32 as i32)), 5)),
        Marker::I64 => be(8).map(|v| (Tok::Int(v as i64), 9)),
        Marker::F32 => be(4).map(|v| (Tok::Float(f64::from(f32::from_bits(v as u32))), 5)),
        Marker::F64 => be(8).map(|v| (Tok::Float(f64::from_bits(v)), 9)),
        Marker::FixStr(n) => payload(1, u64::from(n)).map(|(s, end)| (Tok::Str(s), end)),
        Marker::Str8 => be(1).and_then(|n| payload(2, n).map(|(s, end)| (Tok::Str(s), end))),
        Marker::Str16 => be(2).and_then(|n| payload(3, n).map(|(s, end)| (Tok::Str(s), end))),
        Marker::Str32 => be(4).and_then(|n| payload(5, n).map(|(s, end)| (Tok::Str(s), end))),
        Marker::Bin8 => be(1).and_then(|n| payload(2, n).map(|(_, end)| (Tok::Other, end))),
        Marker::Bin16 => be(2).and_then(|n| payload(3, n).map(|(_, end)| (Tok::Other, end))),
        Marker::Bin32 => be(4).and_then(|n| payload(5, n).map(|(_, end)| (Tok::Other, end))),
        Marker::FixArray(n) => Some((Tok::Array(u32::from(n)), 1)),
        Marker::Array16 => be(2).map(|n| (Tok::Array(n as u32), 3)),
        Marker::Array32 => be(4).map(|n| (Tok::Array(n as u32), 5)),
        Marker::FixMap(n) => Some((Tok::Map(u32::from(n)), 1)),
        Marker::Map16 => be(2).map(|n| (Tok::Map(n as u32), 3)),
        Marker::Map32 => be(4).map(|n| (Tok::Map(n as u32), 5)),
        // Type byte, then 1/2/4/8/16 bytes of data.
        Marker::FixExt1 => payload(2, 1).map(|(_, end)| (Tok::Other, end)),
        Marker::FixExt2 => payload(2, 2).map(|(_, end)| (Tok::Other, end)),
        Marker::FixExt4 => payload(2, 4).map(|(_, end)| (Tok::Other, end)),
        Marker::FixExt8 => payload(2, 8).map(|(_, end)| (Tok::Other, end)),
        Marker::FixExt16 => payload(2, 16).map(|(_, end)| (Tok::Other, end)),
        Marker::Ext8 => be(1).and_then(|n| payload(3, n).map(|(_, end)| (Tok::Other, end))),
        Marker::Ext16 => be(2).and_then(|n| payload(4, n).map(|(_, end)| (Tok::Other, end))),
        Marker::Ext32 => be(4).and_then(|n| payload(6, n).map(|(_, end)| (Tok::Other, end))),
        Marker::Reserved => {
            return Err(InfluxErrorKind::Parse(format!(
                "not MessagePack (byte {first:#04x})"
            )))
        }
    };
    Ok(tok)
}

/// Where a container sits in the answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// A chunk: `{results, error}`.
    Chunk,
    /// `results`: statements.
    Results,
    /// `{statement_id, series, error, partial, messages}`.
    Statement,
    /// `series`.
    SeriesList,
    /// `{name, tags, columns, values, partial}`.
    Series,
    /// `tags`: tag key to value.
    Tags,
    /// `columns`: `time`, then the fields.
    Columns,
    /// `values`: rows.
    Values,
    /// `[time, field...]`.
    Row,
    /// Anything else, read past.
    Skip,
}

/// The key of a map entry being read, as far as it matters.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Key {
    Results,
    Series,
    Error,
    Tags,
    Columns,
    Values,
    /// A tag we group by (its index), or one we do not (`None`).
    Tag(Option<usize>),
    Other,
}

#[derive(Debug)]
struct Frame {
    role: Role,
    map: bool,
    /// Items still to read: entries x 2 (key and value) for a map.
    left: u64,
    /// A map's key for the value being read.
    key: Key,
    /// The position of the next item of an array.
    index: u32,
}

impl Frame {
    fn expects_key(&self) -> bool {
        self.map && self.left.is_multiple_of(2)
    }
}

/// Incremental parser of a v1 MessagePack answer, straight into columns.
pub struct MsgpackParser {
    /// The tags grouped by, in the fetch's order.
    tags: Vec<String>,
    nfields: usize,
    stack: Vec<Frame>,
    /// The current series' tag values.
    series_tags: Vec<Option<String>>,
    /// Columns named by the current series.
    columns: usize,
    /// Whether the current series has had rows.
    rows_read: bool,
    /// The current row.
    time: Option<i64>,
    values: Vec<f64>,
    /// The start of a token the last piece cut.
    carry: Vec<u8>,
}

impl MsgpackParser {
    pub fn new(tags: &[String], nfields: usize) -> MsgpackParser {
        MsgpackParser {
            tags: tags.to_vec(),
            nfields,
            stack: Vec::new(),
            series_tags: vec![None; tags.len()],
            columns: 0,
            rows_read: false,
            time: None,
            values: vec![MISSING; nfields],
            carry: Vec::new(),
        }
    }

    /// Tag columns of the rows it gives.
    pub fn ntags(&self) -> usize {
        self.tags.len()
    }

    /// Parses the next piece of the body, as the network delivers it.
    pub fn push(&mut self, piece: &[u8], out: &mut Columns) -> Result<(), InfluxErrorKind> {
        let mut buf = std::mem::take(&mut self.carry);
        let parsed = if buf.is_empty() {
            self.tokens(piece, out).map(|used| {
                buf.extend_from_slice(&piece[used..]);
            })
        } else {
            buf.extend_from_slice(piece);
            self.tokens(&buf, out).map(|used| {
                buf.drain(..used);
            })
        };
        self.carry = buf;
        parsed
    }

    /// The body has ended: it must end between two chunks.
    pub fn finish(&mut self) -> Result<(), InfluxErrorKind> {
        if self.carry.is_empty() && self.stack.is_empty() {
            return Ok(());
        }
        Err(InfluxErrorKind::Truncated(
            "the answer ends inside a MessagePack value".into(),
        ))
    }

    /// Reads every whole token of `b`; how many bytes they took.
    fn tokens(&mut self, b: &[u8], out: &mut Columns) -> Result<usize, InfluxErrorKind> {
        let mut at = 0;
        loop {
            if let Some(len) = self.float_row(&b[at..], out)? {
                at += len;
                continue;
            }
            let Some((tok, len)) = token(&b[at..])? else {
                return Ok(at);
            };
            self.token(tok, out)?;
            at += len;
        }
    }

    /// The common row, whole in `b`, read at once: an int64 time and each
    /// field a float64 or nil. Its length, or `None` for anything else (an
    /// integer field, a cut row), which then goes token by token.
    fn float_row(&mut self, b: &[u8], out: &mut Columns) -> Result<Option<usize>, InfluxErrorKind> {
        let n = 1 + self.nfields;
        let is_row = self
            .stack
            .last()
            .is_some_and(|f| f.role == Role::Values && f.left > 0);
        if !is_row || n > 15 || b.first() != Some(&(0x90 | n as u8)) {
            return Ok(None);
        }
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        if b.get(1) != Some(&0xd3) {
            return Ok(None);
        }
        let Some(time) = word(2) else {
            return Ok(None);
        };
        let mut at = 10;
        for i in 0..self.nfields {
            self.values[i] = match b.get(at) {
                Some(0xcb) => match word(at + 1) {
                    Some(v) => {
                        at += 9;
                        f64::from_bits(v)
                    }
                    None => return Ok(None),
                },
                Some(0xc0) => {
                    at += 1;
                    MISSING
                }
                _ => return Ok(None),
            };
        }
        let top = self.stack.last_mut().expect("checked");
        top.left -= 1;
        top.index += 1;
        self.time = Some(time as i64);
        self.row(out)?;
        self.close_finished(out)?;
        Ok(Some(at))
    }

    fn token(&mut self, tok: Tok<'_>, out: &mut Columns) -> Result<(), InfluxErrorKind> {
        let Some(top) = self.stack.last_mut() else {
            // A new chunk.
            return match tok {
                Tok::Map(n) => self.open(Role::Chunk, true, n, out),
                _ => Err(InfluxErrorKind::Parse(
                    "the answer is not a MessagePack map".into(),
                )),
            };
        };
        if top.expects_key() {
            top.left -= 1;
            let Tok::Str(k) = tok else {
                // Keys are strings in every map InfluxDB writes.
                top.key = Key::Other;
                return Ok(());
            };
            top.key = match (top.role, k) {
                (Role::Chunk, b"results") => Key::Results,
                (Role::Chunk | Role::Statement, b"error") => Key::Error,
                (Role::Statement, b"series") => Key::Series,
                (Role::Series, b"tags") => Key::Tags,
                (Role::Series, b"columns") => Key::Columns,
                (Role::Series, b"values") => Key::Values,
                (Role::Tags, k) => Key::Tag(self.tags.iter().position(|t| t.as_bytes() == k)),
                _ => Key::Other,
            };
            return Ok(());
        }
        // A value: of a map entry (its key read), or an array's next item.
        top.left -= 1;
        let (role, key, index) = (top.role, top.key, top.index);
        top.index += 1;
        match tok {
            Tok::Array(n) | Tok::Map(n) => {
                let child = match (role, key) {
                    (Role::Chunk, Key::Results) => Role::Results,
                    (Role::Results, _) => Role::Statement,
                    (Role::Statement, Key::Series) => Role::SeriesList,
                    (Role::SeriesList, _) => Role::Series,
                    (Role::Series, Key::Tags) => Role::Tags,
                    (Role::Series, Key::Columns) => Role::Columns,
                    (Role::Series, Key::Values) => Role::Values,
                    (Role::Values, _) => Role::Row,
                    _ => Role::Skip,
                };
                return self.open(child, matches!(tok, Tok::Map(_)), n, out);
            }
            tok => self.scalar(role, key, index, tok)?,
        }
        self.close_finished(out)
    }

    /// Enters a container of `n` items (entries for a map).
    fn open(
        &mut self,
        role: Role,
        map: bool,
        n: u32,
        out: &mut Columns,
    ) -> Result<(), InfluxErrorKind> {
        match role {
            Role::Series => {
                self.series_tags.iter_mut().for_each(|t| *t = None);
                self.columns = 0;
                self.rows_read = false;
            }
            // InfluxDB writes a series' tags and columns before its rows.
            Role::Values if self.columns == 0 => {
                return Err(InfluxErrorKind::Parse(
                    "a series has rows before its columns".into(),
                ));
            }
            Role::Tags if self.rows_read => {
                return Err(InfluxErrorKind::Parse(
                    "a series has rows before its tags".into(),
                ));
            }
            Role::Row => {
                self.time = None;
                self.values.iter_mut().for_each(|v| *v = MISSING);
            }
            _ => {}
        }
        self.stack.push(Frame {
            role,
            map,
            left: u64::from(n) * if map { 2 } else { 1 },
            key: Key::Other,
            index: 0,
        });
        // An empty container ends at once; its end is checked like any other.
        self.close_finished(out)
    }

    /// Leaves every container whose items are all read.
    fn close_finished(&mut self, out: &mut Columns) -> Result<(), InfluxErrorKind> {
        while self.stack.last().is_some_and(|f| f.left == 0) {
            let f = self.stack.pop().expect("checked");
            match f.role {
                Role::Row => self.row(out)?,
                Role::Columns if self.columns != 1 + self.nfields => {
                    return Err(InfluxErrorKind::Parse(format!(
                        "a series has {} columns, expected time and {} fields",
                        self.columns, self.nfields
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn scalar(
        &mut self,
        role: Role,
        key: Key,
        index: u32,
        tok: Tok<'_>,
    ) -> Result<(), InfluxErrorKind> {
        match (role, key) {
            (Role::Chunk | Role::Statement, Key::Error) => {
                let msg = match tok {
                    Tok::Str(s) => String::from_utf8_lossy(s).into_owned(),
                    other => format!("{other:?}"),
                };
                Err(InfluxErrorKind::Query(msg))
            }
            (Role::Tags, Key::Tag(Some(i))) => {
                self.series_tags[i] = match tok {
                    Tok::Str(s) if !s.is_empty() => Some(utf8(s)?.to_owned()),
                    _ => None,
                };
                Ok(())
            }
            (Role::Columns, _) => {
                if index == 0 && !matches!(tok, Tok::Str(b"time")) {
                    return Err(InfluxErrorKind::Parse(
                        "a series' first column is not `time`".into(),
                    ));
                }
                self.columns += 1;
                Ok(())
            }
            (Role::Row, _) => {
                let i = index as usize;
                if i == 0 {
                    self.time = Some(match tok {
                        Tok::Int(t) => t,
                        Tok::UInt(t) => i64::try_from(t)
                            .map_err(|_| InfluxErrorKind::Parse(format!("bad time `{t}`")))?,
                        other => {
                            return Err(InfluxErrorKind::Parse(format!(
                                "bad time `{}`",
                                shown(&other)
                            )))
                        }
                    });
                } else if i <= self.nfields {
                    self.values[i - 1] = match tok {
                        Tok::Nil => MISSING,
                        Tok::Float(v) => v,
                        Tok::Int(v) => v as f64,
                        Tok::UInt(v) => v as f64,
                        other => {
                            return Err(InfluxErrorKind::Parse(format!(
                                "value `{}` is not numeric",
                                shown(&other)
                            )))
                        }
                    };
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A row read: kept unless it has none of the fields.
    fn row(&mut self, out: &mut Columns) -> Result<(), InfluxErrorKind> {
        self.rows_read = true;
        let Some(time) = self.time else {
            return Err(InfluxErrorKind::Parse("a row without a time".into()));
        };
        if self.values.iter().all(|v| v.is_nan()) {
            return Ok(());
        }
        if self.nfields == 1 {
            out.push(time, self.values[0]);
        } else {
            out.push_values(time, &self.values);
        }
        for (i, t) in self.series_tags.iter().enumerate() {
            out.push_tag(i, t.as_deref());
        }
        Ok(())
    }
}

fn utf8(s: &[u8]) -> Result<&str, InfluxErrorKind> {
    std::str::from_utf8(s).map_err(|_| InfluxErrorKind::Parse("a tag value is not UTF-8".into()))
}

/// A value as the error shows it (at most 40 characters).
fn shown(tok: &Tok<'_>) -> String {
    match tok {
        Tok::Str(s) => String::from_utf8_lossy(s).chars().take(40).collect(),
        Tok::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of a chunked answer InfluxDB 1.6.7 gave (captured with curl) to `SELECT "co"::field, "no2"::field FROM "fx".."air"
    /// WHERE time >= 0 AND time < 1000000000000 GROUP BY "station"` with
    /// `chunk_size=2`, over points written as
    /// `air,station=a\,b\ c\=d,x=1 co=1.5,no2=2i 60000000000`,
    /// `air,station="q"\\z,x=2 co=2.5 120000000000`,
    /// `air,station=é co=3,no2=4i 180000000000`,
    /// `air x=1,co=4 240000000000` and `air,x=9 no2=5i 300000000000`.
    const CAPTURED: &[u8] = include_bytes!("../../../tests/fixtures/influxdb/v1_grouped.msgpack");

    fn parse(body: &[u8], nfields: usize, pieces: usize) -> Result<Vec<String>, InfluxErrorKind> {
        let mut p = MsgpackParser::new(&["station".to_owned()], nfields);
        let mut cols = Columns::with_capacity(1, nfields, 0);
        for piece in body.chunks(pieces.max(1)) {
            p.push(piece, &mut cols)?;
        }
        p.finish()?;
        Ok((0..cols.len())
            .map(|r| {
                let vals: Vec<String> = (0..nfields)
                    .map(|f| format!("{}", cols.field(f)[r]))
                    .collect();
                format!(
                    "{} {:?} {}",
                    cols.times()[r],
                    cols.tag(0, r),
                    vals.join(" ")
                )
            })
            .collect())
    }

    #[test]
    fn a_captured_answer_parses_in_pieces_of_any_size() {
        let want = [
            "240000000 None 4 NaN",
            "300000000 None NaN 5",
            "120000000 Some(\"\\\"q\\\"\\\\\\\\z\") 2.5 NaN",
            "60000000 Some(\"a,b c=d\") 1.5 2",
            "180000000 Some(\"é\") 3 4",
        ];
        for size in [1, 2, 3, 7, 64, CAPTURED.len()] {
            assert_eq!(parse(CAPTURED, 2, size).unwrap(), want, "pieces of {size}");
        }
    }

    #[test]
    fn a_body_cut_inside_a_value_is_truncated() {
        for cut in [1, 10, CAPTURED.len() / 2, CAPTURED.len() - 1] {
            let e = parse(&CAPTURED[..cut], 2, 5).unwrap_err();
            assert!(matches!(e, InfluxErrorKind::Truncated(_)), "cut {cut}: {e}");
        }
    }

    /// Builds MessagePack by hand, per the spec, for what the capture lacks.
    fn chunk(series: &[u8]) -> Vec<u8> {
        let mut b = vec![0x81];
        b.extend_from_slice(b"\xa7results\x91\x82\xacstatement_id\x00\xa6series\x91");
        b.extend_from_slice(series);
        b
    }

    #[test]
    fn errors_name_the_value_and_the_servers_reason() {
        // {"results":[{"error":"database not found: nosuch"}]}, as captured.
        let body = b"\x81\xa7results\x91\x81\xa5error\xbadatabase not found: nosuch";
        let e = parse(body, 1, 4).unwrap_err().to_string();
        assert_eq!(e, "query error: database not found: nosuch");
        // A string field: {"name","columns":["time","co"],"values":[[60,"high"]]}.
        let s = chunk(b"\x82\xa7columns\x92\xa4time\xa2co\xa6values\x91\x92\x3c\xa4high");
        let e = parse(&s, 1, 3).unwrap_err().to_string();
        assert_eq!(e, "bad response: value `high` is not numeric");
        let s = chunk(b"\x82\xa7columns\x92\xa4time\xa2co\xa6values\x91\x92\xc3\x01");
        assert!(parse(&s, 1, 3)
            .unwrap_err()
            .to_string()
            .contains("bad time `true`"));
        // Columns other than time and the fields asked for.
        let s = chunk(b"\x81\xa7columns\x93\xa4time\xa2co\xa2xx");
        assert!(parse(&s, 1, 3)
            .unwrap_err()
            .to_string()
            .contains("a series has 3 columns, expected time and 1 fields"));
        assert!(parse(b"\x93", 1, 1)
            .unwrap_err()
            .to_string()
            .contains("not a MessagePack map"));
        assert!(parse(b"\xc1", 1, 1)
            .unwrap_err()
            .to_string()
            .contains("not MessagePack"));
    }

    #[test]
    fn every_number_encoding_reads_the_same() {
        // Times: int64, uint32, fixint, negative int8; values: float32,
        // uint8, int16, negative fixint.
        let s = chunk(
            b"\x84\xa4name\xa3air\xa4tags\x81\xa7station\xa1s\
              \xa7columns\x92\xa4time\xa2co\
              \xa6values\x94\
              \x92\xd3\x00\x00\x00\x00\x00\x00\x0e\xa6\xca\x3f\xc0\x00\x00\
              \x92\xce\x00\x00\x3a\x98\xcc\xc8\
              \x92\x05\xd1\xff\x38\
              \x92\xd0\x80\xff",
        );
        assert_eq!(
            parse(&s, 1, 2).unwrap(),
            [
                "3 Some(\"s\") 1.5",
                "15 Some(\"s\") 200",
                "0 Some(\"s\") -200",
                "-1 Some(\"s\") -1"
            ]
        );
        // A series must name its tags and columns before its rows, as
        // InfluxDB writes it.
        let s = chunk(b"\x82\xa6values\x91\x92\x01\x01\xa4tags\x81\xa7station\xa1s");
        assert!(parse(&s, 1, 2)
            .unwrap_err()
            .to_string()
            .contains("rows before its columns"));
    }
}
