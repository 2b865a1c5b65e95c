//! Points in columns on their way to staging: times (microseconds), one
//! value column per field fetched, and one string column per tag, kept as a
//! batch's staged rows and read by the transform through `crate::staged`'s
//! table function. Sources parse straight into these: no allocation per row,
//! no temporary file, no second parse by DuckDB.
//!
//! Jobs that share a query share a chunk: a row is a time and a series, with
//! a value per field, and NaN where the point lacks that field (InfluxDB
//! stores no NaN, so it cannot be a reading).

use std::collections::HashMap;

use super::Point;

/// Rows per chunk sent to the staging writer: big enough that handing over
/// costs little, small enough (~1.3 MB with one tag) that a chunk being
/// filled beside a batch's staged ones adds little.
pub const CHUNK_ROWS: usize = 65_536;

/// One tag column, dictionary-encoded: a code per row into the chunk's
/// distinct values. A tag names a series (a station), so a chunk holds a few
/// dozen distinct values over 65,536 rows: 4 bytes a row instead of the
/// string, its offset and a validity flag (~17), which is most of what a
/// batch's staged rows weigh while they wait to be loaded.
#[derive(Debug, Clone)]
struct TagColumn {
    codes: Vec<u32>,
    values: Vec<Box<str>>,
    /// Code of each value; rows come grouped by series, so `push` checks
    /// the last value first and rarely gets here.
    index: HashMap<Box<str>, u32>,
}

/// The code of a row without the tag.
const NULL: u32 = u32::MAX;

impl TagColumn {
    fn with_capacity(rows: usize) -> TagColumn {
        TagColumn {
            codes: Vec::with_capacity(rows),
            values: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn push(&mut self, tag: Option<&str>) {
        let code = match tag {
            None => NULL,
            Some(t) => match self.codes.last() {
                Some(&last) if last != NULL && *self.values[last as usize] == *t => last,
                _ => self.code(t),
            },
        };
        self.codes.push(code);
    }

    fn code(&mut self, t: &str) -> u32 {
        if let Some(&c) = self.index.get(t) {
            return c;
        }
        let c = self.values.len() as u32;
        self.values.push(t.into());
        self.index.insert(t.into(), c);
        c
    }

    fn get(&self, row: usize) -> Option<&str> {
        match self.codes[row] {
            NULL => None,
            c => Some(&self.values[c as usize]),
        }
    }
}

/// The value of a field a point lacks.
pub const MISSING: f64 = f64::NAN;

/// A chunk of points of one query (one job's, or the jobs' sharing it),
/// column by column.
#[derive(Debug, Clone)]
pub struct Columns {
    time_us: Vec<i64>,
    /// One column per field, in the query's order.
    values: Vec<Vec<f64>>,
    tags: Vec<TagColumn>,
}

impl Columns {
    /// One field.
    pub fn new(ntags: usize) -> Columns {
        Columns::with_capacity(ntags, 1, 0)
    }

    /// Room for `rows` rows without growing (growing a column copies it).
    pub fn with_capacity(ntags: usize, nfields: usize, rows: usize) -> Columns {
        Columns {
            time_us: Vec::with_capacity(rows),
            values: (0..nfields).map(|_| Vec::with_capacity(rows)).collect(),
            tags: (0..ntags).map(|_| TagColumn::with_capacity(rows)).collect(),
        }
    }

    pub fn nfields(&self) -> usize {
        self.values.len()
    }

    pub fn len(&self) -> usize {
        self.time_us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.time_us.is_empty()
    }

    pub fn ntags(&self) -> usize {
        self.tags.len()
    }

    /// Times in microseconds, one per row.
    pub fn times(&self) -> &[i64] {
        &self.time_us
    }

    /// The first field's values, one per row.
    pub fn values(&self) -> &[f64] {
        &self.values[0]
    }

    /// Field `field`'s values, one per row (`MISSING` where a row lacks it).
    pub fn field(&self, field: usize) -> &[f64] {
        &self.values[field]
    }

    /// Row `row`'s tag of column `col` (`None`: the point lacks the tag).
    pub fn tag(&self, col: usize, row: usize) -> Option<&str> {
        self.tags[col].get(row)
    }

    /// Appends a row's time and its one field's value; its tags follow with
    /// `push_tag`, one per tag column in order (`None`: the point lacks the tag).
    pub fn push(&mut self, time_ns: i64, value: f64) {
        // Staging keeps microseconds, as DuckDB's TIMESTAMPTZ does.
        self.time_us.push(time_ns.div_euclid(1000));
        self.values[0].push(value);
    }

    /// Appends a row's time and a value per field (`MISSING` for a field
    /// the point lacks); tags follow with `push_tag`.
    pub fn push_values(&mut self, time_ns: i64, values: &[f64]) {
        self.time_us.push(time_ns.div_euclid(1000));
        for (col, v) in self.values.iter_mut().zip(values) {
            col.push(*v);
        }
    }

    pub fn push_tag(&mut self, col: usize, tag: Option<&str>) {
        self.tags[col].push(tag);
    }

    pub fn push_point(&mut self, p: &Point) {
        self.push_values(p.time_ns, &p.values);
        for (i, t) in p.tags.iter().enumerate() {
            self.push_tag(i, t.as_deref());
        }
    }

    /// Drops rows with time in `[from_ns, to_ns)` (a sub-query being retried).
    pub fn discard(&mut self, from_ns: i64, to_ns: i64) {
        let (from, to) = (from_ns.div_euclid(1000), to_ns.div_euclid(1000));
        if !self.time_us.iter().any(|&t| t >= from && t < to) {
            return;
        }
        let old = std::mem::replace(
            self,
            Columns::with_capacity(self.ntags(), self.nfields(), 0),
        );
        for row in 0..old.len() {
            let t = old.time_us[row];
            if t >= from && t < to {
                continue;
            }
            self.time_us.push(t);
            for (col, values) in self.values.iter_mut().zip(&old.values) {
                col.push(values[row]);
            }
            for (i, col) in old.tags.iter().enumerate() {
                self.tags[i].push(col.get(row));
            }
        }
    }

    /// Rows the chunk has room for without growing.
    pub fn capacity(&self) -> usize {
        self.time_us.capacity()
    }

    /// Takes the rows, leaving an empty chunk with the same columns and room
    /// for `rows` rows.
    pub fn take(&mut self, rows: usize) -> Columns {
        let (ntags, nfields) = (self.ntags(), self.nfields());
        std::mem::replace(self, Columns::with_capacity(ntags, nfields, rows))
    }

    /// Gives back the room beyond the rows (a batch's last chunk is kept,
    /// mostly empty, until the batch is transformed).
    pub fn shrink_to_fit(&mut self) {
        self.time_us.shrink_to_fit();
        for v in &mut self.values {
            v.shrink_to_fit();
        }
        for t in &mut self.tags {
            t.codes.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Columns {
        let mut c = Columns::new(2);
        for (t, v, a, b) in [
            (1_000, 1.5, Some("A"), None),
            (2_000_999, 2.5, Some("B"), Some("x")),
            (-1, 3.5, None, Some("")),
        ] {
            c.push(t, v);
            c.push_tag(0, a);
            c.push_tag(1, b);
        }
        c
    }

    fn tags(c: &Columns, col: usize) -> Vec<Option<&str>> {
        (0..c.len()).map(|r| c.tag(col, r)).collect()
    }

    #[test]
    fn columns_keep_microseconds_tags_and_values() {
        let c = sample();
        assert_eq!(c.len(), 3);
        // Nanoseconds floor to microseconds, also before the epoch.
        assert_eq!(c.times(), &[1, 2_000, -1]);
        assert_eq!(tags(&c, 0), vec![Some("A"), Some("B"), None]);
        assert_eq!(tags(&c, 1), vec![None, Some("x"), Some("")]);
        assert_eq!(c.values(), &[1.5, 2.5, 3.5]);
    }

    #[test]
    fn discard_keeps_rows_outside_the_range() {
        let mut c = sample();
        c.discard(0, 1_000_000);
        assert_eq!(c.len(), 2);
        assert_eq!(c.times(), &[2_000, -1]);
        assert_eq!(tags(&c, 0), vec![Some("B"), None]);
        assert_eq!(tags(&c, 1), vec![Some("x"), Some("")]);
        assert_eq!(c.values(), &[2.5, 3.5]);
    }

    #[test]
    fn tags_are_stored_once_per_distinct_value() {
        let mut c = Columns::new(1);
        for (i, t) in [
            Some("s1"),
            Some("s1"),
            Some("s2"),
            None,
            Some("s1"),
            Some("s2"),
        ]
        .into_iter()
        .enumerate()
        {
            c.push(i as i64 * 1000, i as f64);
            c.push_tag(0, t);
        }
        assert_eq!(
            tags(&c, 0),
            vec![
                Some("s1"),
                Some("s1"),
                Some("s2"),
                None,
                Some("s1"),
                Some("s2")
            ]
        );
        assert_eq!(c.tags[0].values.len(), 2);
        assert_eq!(c.tags[0].codes, vec![0, 0, 1, NULL, 0, 1]);
    }
}
