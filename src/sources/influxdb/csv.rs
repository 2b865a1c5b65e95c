//! CSV as InfluxDB writes it: RFC 4180 records, and the v1 `/query` layout.
//!
//! v1 (`Accept: application/csv`): a header `name,tags,time,<columns>`, then
//! rows; a blank line and a new header whenever the series' columns change.
//! Our queries ask for `field::field..., tag::tag...`, so the values are
//! columns 4 and on and the tags follow in order; time is an integer in
//! nanoseconds. An empty value is a field the point lacks; a row lacking
//! every field is left out.

use super::InfluxErrorKind;
use crate::sources::columns::MISSING;
use crate::sources::Columns;

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

/// Incremental parser of a v1 CSV response, straight into columns.
pub struct V1Parser {
    ntags: usize,
    nfields: usize,
    /// The current row's values.
    values: Vec<f64>,
    want_header: bool,
    fields: Vec<String>,
    /// Where each field of the current row ends.
    ends: Vec<usize>,
    /// The start of a line the last piece cut.
    carry: Vec<u8>,
}

impl V1Parser {
    pub fn new(ntags: usize, nfields: usize) -> V1Parser {
        V1Parser {
            ntags,
            nfields,
            values: Vec::with_capacity(nfields),
            want_header: true,
            fields: Vec::new(),
            ends: Vec::new(),
            carry: Vec::new(),
        }
    }

    /// Tag columns of the rows it gives.
    pub fn ntags(&self) -> usize {
        self.ntags
    }

    /// Parses the next piece of the body, as the network delivers it.
    pub fn push(&mut self, piece: &[u8], out: &mut Columns) -> Result<(), InfluxErrorKind> {
        let mut rest = piece;
        if !self.carry.is_empty() {
            // Complete the line the previous piece cut, copying only it:
            // pieces are a few KB, so most end mid-line.
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                self.carry.extend_from_slice(rest);
                return Ok(());
            };
            let mut line = std::mem::take(&mut self.carry);
            line.extend_from_slice(&rest[..=nl]);
            let res = utf8(&line).and_then(|l| self.lines(l, out));
            line.clear();
            self.carry = line;
            res?;
            rest = &rest[nl + 1..];
        }
        let Some(last) = memchr::memrchr(b'\n', rest) else {
            self.carry.extend_from_slice(rest);
            return Ok(());
        };
        // Checked once for all these lines: a line end never cuts a character.
        self.lines(utf8(&rest[..=last])?, out)?;
        self.carry.extend_from_slice(&rest[last + 1..]);
        Ok(())
    }

    /// Whole lines (`body` ends with a line end). One pass finds every comma,
    /// quote and line end; a data row without quotes is taken from there,
    /// anything else (headers, blank lines, quoted fields) goes to `line`.
    /// InfluxDB quotes exactly the fields holding a comma, a quote or a line
    /// end, so a row without a quote has none of these inside a field.
    fn lines(&mut self, body: &str, out: &mut Columns) -> Result<(), InfluxErrorKind> {
        let b = body.as_bytes();
        let mut start = 0;
        let mut quoted = false;
        self.ends.clear();
        for at in memchr::memchr3_iter(b',', b'\n', b'"', b) {
            match b[at] {
                b',' => self.ends.push(at),
                b'"' => quoted = true,
                _ => {
                    let end = if at > start && b[at - 1] == b'\r' {
                        at - 1
                    } else {
                        at
                    };
                    if quoted || self.want_header || end == start {
                        // `line` drops the `\r` itself.
                        self.line(&body[start..at], out)?;
                    } else {
                        self.ends.push(end);
                        self.row(body, start, out)?;
                    }
                    self.ends.clear();
                    quoted = false;
                    start = at + 1;
                }
            }
        }
        Ok(())
    }

    /// A data row of `body` from `start`, its fields ending at `self.ends`.
    fn row(&mut self, body: &str, start: usize, out: &mut Columns) -> Result<(), InfluxErrorKind> {
        let ends = &self.ends;
        let nf = self.nfields;
        let line = || &body[start..*ends.last().expect("a row has an end")];
        if ends.len() < 3 + nf + self.ntags {
            return Err(short_row(line()));
        }
        // Commas are ASCII: every field boundary is a character boundary.
        let field = |i: usize| &body[if i == 0 { start } else { ends[i - 1] + 1 }..ends[i]];
        if nf == 1 {
            let Some(value) = value(field(3))? else {
                return Ok(());
            };
            out.push(time(field(2))?, value);
        } else {
            self.values.clear();
            for i in 0..nf {
                self.values.push(value(field(3 + i))?.unwrap_or(MISSING));
            }
            if self.values.iter().all(|v| v.is_nan()) {
                return Ok(());
            }
            out.push_values(time(field(2))?, &self.values);
        }
        for i in 0..self.ntags {
            let tag = field(3 + nf + i);
            out.push_tag(i, (!tag.is_empty()).then_some(tag));
        }
        Ok(())
    }

    /// The body's last line, when it has no line end.
    pub fn finish(&mut self, out: &mut Columns) -> Result<(), InfluxErrorKind> {
        if self.carry.is_empty() {
            return Ok(());
        }
        self.push(b"\n", out)
    }

    /// One line of the body, with or without its `\r`.
    fn line(&mut self, line: &str, out: &mut Columns) -> Result<(), InfluxErrorKind> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            // A new header follows whenever the series' columns change.
            self.want_header = true;
            return Ok(());
        }
        if self.want_header {
            split_record(line, &mut self.fields).map_err(InfluxErrorKind::Parse)?;
            if self.fields.len() != 3 + self.nfields + self.ntags
                || self.fields[..3] != ["name", "tags", "time"]
            {
                return Err(InfluxErrorKind::Parse(format!(
                    "unexpected CSV header `{}`",
                    line.chars().take(120).collect::<String>()
                )));
            }
            self.want_header = false;
            return Ok(());
        }
        // Quoted fields (tags with commas or quotes): the general splitter.
        split_record(line, &mut self.fields).map_err(InfluxErrorKind::Parse)?;
        let nf = self.nfields;
        if self.fields.len() < 3 + nf + self.ntags {
            return Err(short_row(line));
        }
        self.values.clear();
        for i in 0..nf {
            self.values
                .push(value(&self.fields[3 + i])?.unwrap_or(MISSING));
        }
        if self.values.iter().all(|v| v.is_nan()) {
            return Ok(());
        }
        out.push_values(time(&self.fields[2])?, &self.values);
        for i in 0..self.ntags {
            let t = &self.fields[3 + nf + i];
            out.push_tag(i, (!t.is_empty()).then_some(t.as_str()));
        }
        Ok(())
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, InfluxErrorKind> {
    std::str::from_utf8(bytes).map_err(|_| InfluxErrorKind::Parse("response is not UTF-8".into()))
}

fn short_row(line: &str) -> InfluxErrorKind {
    InfluxErrorKind::Parse(format!(
        "short CSV row `{}`",
        line.chars().take(120).collect::<String>()
    ))
}

/// Nanoseconds since the epoch: an optional minus and at most 19 digits.
fn time(raw: &str) -> Result<i64, InfluxErrorKind> {
    let bad = || InfluxErrorKind::Parse(format!("bad time `{raw}`"));
    let (negative, digits) = match raw.as_bytes().split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, raw.as_bytes()),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(bad());
    }
    // 18 digits cannot overflow; a 19th is added with a check.
    let (head, last) = digits.split_at(digits.len().min(18));
    let mut n: u64 = 0;
    for &c in head {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(bad());
        }
        n = n * 10 + u64::from(d);
    }
    let mut n = n as i64;
    if let Some(&c) = last.first() {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(bad());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d)))
            .ok_or_else(bad)?;
    }
    Ok(if negative { -n } else { n })
}

/// The field's value; `None` when the point lacks the field.
fn value(raw: &str) -> Result<Option<f64>, InfluxErrorKind> {
    if raw.is_empty() {
        return Ok(None);
    }
    if let Some(v) = short_decimal(raw) {
        return Ok(Some(v));
    }
    parse_number(raw).map(Some)
}

/// `-?digits[.digits]` with at most 15 digits, exactly as `str::parse`
/// rounds it: the digits as an integer (< 2^53, exact) divided by a power of
/// ten (<= 10^15, exact) is one correctly rounded division. Anything else
/// (exponents, long values, `inf`) is `None`, for the general parser.
fn short_decimal(raw: &str) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, b) = match raw.as_bytes().split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, raw.as_bytes()),
    };
    let (mut m, mut digits, mut scale, mut dot) = (0u64, 0usize, 0usize, false);
    for &c in b {
        if c == b'.' && !dot {
            dot = true;
            continue;
        }
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        m = m * 10 + u64::from(d);
        digits += 1;
        scale += usize::from(dot);
        if digits > 15 {
            return None;
        }
    }
    if digits == 0 {
        return None;
    }
    let v = m as f64 / POW10[scale];
    Some(if negative { -v } else { v })
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

    /// Parses a body fed in two pieces cut at `cut`; the staged rows as
    /// (time in microseconds, tags, value).
    fn parse(body: &[u8], ntags: usize, cut: usize) -> Result<Vec<String>, InfluxErrorKind> {
        let mut p = V1Parser::new(ntags, 1);
        let mut cols = Columns::new(ntags);
        p.push(&body[..cut], &mut cols)?;
        p.push(&body[cut..], &mut cols)?;
        p.finish(&mut cols)?;
        Ok(rows(cols))
    }

    fn rows(cols: Columns) -> Vec<String> {
        (0..cols.len())
            .map(|r| {
                let tags: Vec<String> = (0..cols.ntags())
                    .map(|c| cols.tag(c, r).unwrap_or("<null>").to_owned())
                    .collect();
                format!("{} {:?} {}", cols.times()[r], tags, cols.values()[r])
            })
            .collect()
    }

    #[test]
    fn v1_layout_with_header_changes_in_any_pieces() {
        let body = b"name,tags,time,co,station\nair,,1700000000000000000,1,\"St 1, North\"\nair,,1700000060000000999,0.25,\nair,,1700000061000000000,,A\n\nname,tags,time,co,station\r\nair,,1700000120000000000,2,B\r\nair,,-1500,-3e-2,\"\"\"q\"\"\"";
        let want = [
            "1700000000000000 [\"St 1, North\"] 1",
            "1700000060000000 [\"<null>\"] 0.25",
            "1700000120000000 [\"B\"] 2",
            "-2 [\"\\\"q\\\"\"] -0.03",
        ];
        // Every cut, as the network may deliver it.
        for cut in 0..=body.len() {
            assert_eq!(parse(body, 1, cut).unwrap(), want, "cut at {cut}");
        }
        // Pieces shorter than a line, so that lines span several.
        for size in 1..8 {
            let mut p = V1Parser::new(1, 1);
            let mut cols = Columns::new(1);
            for piece in body.chunks(size) {
                p.push(piece, &mut cols).unwrap();
            }
            p.finish(&mut cols).unwrap();
            assert_eq!(rows(cols), want, "pieces of {size}");
        }
    }

    /// Several fields in one query: a field a row lacks is empty (missing),
    /// a row lacking all of them is left out, the tags follow the fields.
    #[test]
    fn v1_several_fields_per_row() {
        let body = "name,tags,time,co,no2,station\n\
                    air,,60000000000,0.5,,s1\n\
                    air,,120000000000,,21,s1\n\
                    air,,180000000000,,,s1\n\
                    air,,240000000000,0.25,22.5,\"s, 2\"\n";
        for cut in [1, 7, 50, body.len()] {
            let mut p = V1Parser::new(1, 2);
            let mut out = Columns::with_capacity(1, 2, 0);
            for piece in body.as_bytes().chunks(cut) {
                p.push(piece, &mut out).unwrap();
            }
            p.finish(&mut out).unwrap();
            assert_eq!(out.times(), &[60_000_000, 120_000_000, 240_000_000]);
            let show = |f: &[f64]| f.iter().map(|v| format!("{v}")).collect::<Vec<_>>();
            assert_eq!(show(out.field(0)), ["0.5", "NaN", "0.25"]);
            assert_eq!(show(out.field(1)), ["NaN", "21", "22.5"]);
            assert_eq!(out.tag(0, 2), Some("s, 2"));
        }
        let mut p = V1Parser::new(1, 2);
        let mut out = Columns::with_capacity(1, 2, 0);
        let e = p
            .push(b"name,tags,time,co,station\n", &mut out)
            .unwrap_err();
        assert!(e.to_string().contains("unexpected CSV header"), "{e}");
    }

    #[test]
    fn short_decimals_round_as_the_standard_parser() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let digits = (next() % 15 + 1) as usize;
            let m = next() % 10u64.pow(digits as u32);
            let scale = (next() % (digits as u64 + 1)) as usize;
            let mut t = format!("{m:0digits$}");
            if scale > 0 {
                t.insert(digits - scale, '.');
            }
            if next() % 2 == 0 {
                t.insert(0, '-');
            }
            assert_eq!(value(&t).unwrap(), Some(t.parse::<f64>().unwrap()), "{t}");
        }
        for t in [
            "1.",
            ".5",
            "-0",
            "+1",
            "1e3",
            "1234567890.1234567",
            "NaN",
            "-inf",
        ] {
            assert_eq!(
                value(t).unwrap().map(f64::to_bits),
                Some(t.parse::<f64>().unwrap().to_bits()),
                "{t}"
            );
        }
        for t in ["-", ".", "1.2.3", "0x10", "true"] {
            assert!(value(t).is_err(), "{t}");
        }
        assert_eq!(time("9223372036854775807").unwrap(), i64::MAX);
        assert_eq!(time("-9223372036854775807").unwrap(), -i64::MAX);
        assert!(time("9223372036854775808").is_err());
        assert!(time("-").is_err());
    }

    #[test]
    fn the_one_pass_row_agrees_with_the_general_splitter() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let values = [
            "1",
            "0.25",
            "-3.5",
            "",
            "1e3",
            "12345678901234567",
            "-",
            ".",
            "true",
            "0.1234567890123",
        ];
        let tags = ["A", "", "St 1", "\"a, b\"", "é", "x\r"];
        let times = [
            "1700000000000000000",
            "-1500",
            "0",
            "9223372036854775807",
            "12x",
            "",
        ];
        for _ in 0..3000 {
            let ntags = next(3) as usize;
            let mut body = format!(
                "name,tags,time,v{}\n",
                (0..ntags).map(|i| format!(",t{i}")).collect::<String>()
            );
            for _ in 0..next(4) {
                let mut row = format!(
                    "air,,{},{}",
                    times[next(6) as usize],
                    values[next(10) as usize]
                );
                // Sometimes a field short or one too many.
                let n = (ntags as i64 + next(3) as i64 - 1).max(0) as usize;
                for _ in 0..n {
                    row.push(',');
                    row.push_str(tags[next(6) as usize]);
                }
                body.push_str(&row);
                body.push_str(if next(5) == 0 { "\r\n" } else { "\n" });
            }
            // The general path alone, line by line, as the reference.
            let mut reference = V1Parser::new(ntags, 1);
            let mut want = Columns::new(ntags);
            let expected = body
                .split_terminator('\n')
                .try_for_each(|l| reference.line(l, &mut want))
                .map(|()| rows(want.clone()));
            for cut in [0, body.len() / 3, body.len()] {
                let got = parse(body.as_bytes(), ntags, cut);
                match (&expected, &got) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{body:?}"),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{body:?}"),
                    _ => panic!("{body:?}: {expected:?} against {got:?}"),
                }
            }
        }
    }

    #[test]
    fn v1_without_tags_and_with_more_columns_than_asked() {
        let body = b"name,tags,time,co\nair,,60000,1.5\n";
        assert_eq!(parse(body, 0, 3).unwrap(), ["60 [] 1.5"]);
        let body = b"name,tags,time,co,a,b\nair,,60000,1.5,x,\n";
        assert_eq!(parse(body, 2, 3).unwrap(), ["60 [\"x\", \"<null>\"] 1.5"]);
    }

    #[test]
    fn v1_rejects_bad_rows_and_headers_naming_the_value() {
        let header = "name,tags,time,co,station\n";
        let err = |body: &str| parse(body.as_bytes(), 1, 0).unwrap_err().to_string();
        assert!(err(&format!("{header}air,,1,true,A\n")).contains("value `true` is not numeric"));
        assert!(err(&format!("{header}air,,1x,1,A\n")).contains("bad time `1x`"));
        assert!(err(&format!("{header}air,,99999999999999999999,1,A\n")).contains("bad time"));
        assert!(err(&format!("{header}air,,1,1\n")).contains("short CSV row `air,,1,1`"));
        assert!(err(&format!("{header}air,,\"1\",1\n")).contains("short CSV row"));
        assert!(err("<html>\n").contains("unexpected CSV header `<html>`"));
        assert!(err("name,tags,time,co\n").contains("unexpected CSV header"));
        let mut bad = header.as_bytes().to_vec();
        bad.extend_from_slice(b"air,,1,1,\xff\n");
        assert!(parse(&bad, 1, 0)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
    }
}
