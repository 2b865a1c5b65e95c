//! Points in columns on their way to staging: times (microseconds), values,
//! and one string column per tag, kept as a batch's staged rows and read by
//! the transform through `crate::staged`'s table function. Sources parse
//! straight into these: no allocation per row, no temporary file, no second
//! parse by DuckDB.

use super::Point;

/// Rows per chunk sent to the staging writer: big enough that handing over
/// costs little, small enough (~2 MB) that a batch's last, partly filled
/// chunk wastes little while the batch waits to be loaded.
pub const CHUNK_ROWS: usize = 65_536;

/// One tag column: UTF-8 bytes back to back, offsets, and which rows have
/// the tag.
#[derive(Debug, Clone)]
struct TagColumn {
    bytes: Vec<u8>,
    offsets: Vec<i32>,
    valid: Vec<bool>,
}

impl TagColumn {
    fn with_capacity(rows: usize) -> TagColumn {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        TagColumn {
            // Station names and the like: a dozen bytes.
            bytes: Vec::with_capacity(rows * 12),
            offsets,
            valid: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, tag: Option<&str>) {
        match tag {
            Some(t) => {
                self.bytes.extend_from_slice(t.as_bytes());
                self.valid.push(true);
            }
            None => {
                self.valid.push(false);
            }
        }
        self.offsets.push(self.bytes.len() as i32);
    }

    fn get(&self, row: usize) -> Option<&str> {
        if !self.valid[row] {
            return None;
        }
        let (a, b) = (self.offsets[row] as usize, self.offsets[row + 1] as usize);
        // Only whole `&str`s are ever pushed.
        std::str::from_utf8(&self.bytes[a..b]).ok()
    }
}

/// A chunk of one job's points, column by column.
#[derive(Debug, Clone)]
pub struct Columns {
    time_us: Vec<i64>,
    value: Vec<f64>,
    tags: Vec<TagColumn>,
}

impl Columns {
    pub fn new(ntags: usize) -> Columns {
        Columns::with_capacity(ntags, 0)
    }

    /// Room for `rows` rows without growing (growing a column copies it).
    pub fn with_capacity(ntags: usize, rows: usize) -> Columns {
        Columns {
            time_us: Vec::with_capacity(rows),
            value: Vec::with_capacity(rows),
            tags: (0..ntags).map(|_| TagColumn::with_capacity(rows)).collect(),
        }
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

    /// Values, one per row.
    pub fn values(&self) -> &[f64] {
        &self.value
    }

    /// Row `row`'s tag of column `col` (`None`: the point lacks the tag).
    pub fn tag(&self, col: usize, row: usize) -> Option<&str> {
        self.tags[col].get(row)
    }

    /// Appends a row's time and value; its tags follow with `push_tag`, one
    /// per tag column in order (`None`: the point lacks the tag).
    pub fn push(&mut self, time_ns: i64, value: f64) {
        // Staging keeps microseconds, as DuckDB's TIMESTAMPTZ does.
        self.time_us.push(time_ns.div_euclid(1000));
        self.value.push(value);
    }

    pub fn push_tag(&mut self, col: usize, tag: Option<&str>) {
        self.tags[col].push(tag);
    }

    pub fn push_point(&mut self, p: &Point) {
        self.push(p.time_ns, p.value);
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
        let old = std::mem::replace(self, Columns::new(self.ntags()));
        for row in 0..old.len() {
            let t = old.time_us[row];
            if t >= from && t < to {
                continue;
            }
            self.time_us.push(t);
            self.value.push(old.value[row]);
            for (i, col) in old.tags.iter().enumerate() {
                self.tags[i].push(col.get(row));
            }
        }
    }

    /// Takes the rows, leaving an empty chunk with the same columns and room
    /// for as many rows.
    pub fn take(&mut self) -> Columns {
        let next = Columns::with_capacity(self.ntags(), self.time_us.capacity());
        std::mem::replace(self, next)
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
}
