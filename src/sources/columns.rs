//! Points in columns on their way to staging: times (microseconds), values,
//! and one string column per tag, handed to DuckDB's appender as one Arrow
//! batch. Sources parse straight into these: no allocation per row, no
//! temporary file, no second parse by DuckDB.

use std::sync::Arc;

use duckdb::arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMicrosecondArray};
use duckdb::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use duckdb::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use duckdb::arrow::record_batch::RecordBatch;

use super::Point;

/// Rows per chunk sent to the staging writer: big enough that handing over
/// costs little, small enough (~2 MB) to keep memory flat.
pub const CHUNK_ROWS: usize = 65_536;

/// One tag column: UTF-8 bytes back to back, Arrow offsets, and which rows
/// have the tag.
#[derive(Debug, Clone)]
struct TagColumn {
    bytes: Vec<u8>,
    offsets: Vec<i32>,
    valid: Vec<bool>,
    nulls: usize,
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
            nulls: 0,
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
                self.nulls += 1;
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

    fn into_array(self) -> ArrayRef {
        let nulls = (self.nulls > 0).then(|| NullBuffer::from(self.valid));
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        Arc::new(StringArray::new(offsets, self.bytes.into(), nulls))
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

    /// The rows as an Arrow batch typed like the staging table:
    /// `time TIMESTAMPTZ, <tags> VARCHAR, value DOUBLE`.
    pub fn into_batch(self) -> RecordBatch {
        let mut fields = vec![Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        )];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(
            TimestampMicrosecondArray::from(self.time_us).with_timezone("UTC"),
        )];
        for (i, col) in self.tags.into_iter().enumerate() {
            fields.push(Field::new(format!("tag{i}"), DataType::Utf8, true));
            arrays.push(col.into_array());
        }
        fields.push(Field::new("value", DataType::Float64, false));
        arrays.push(Arc::new(Float64Array::from(self.value)));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .expect("columns of equal length, typed as declared")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckdb::arrow::array::Array;

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

    #[test]
    fn batch_has_staging_types_and_values() {
        let b = sample().into_batch();
        assert_eq!(b.num_rows(), 3);
        let time = b
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        // Nanoseconds floor to microseconds, also before the epoch.
        assert_eq!(time.values().to_vec(), vec![1, 2_000, -1]);
        let a = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(a.value(0), "A");
        assert_eq!(a.value(1), "B");
        assert!(a.is_null(2));
        let t = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        assert!(t.is_null(0));
        assert_eq!(t.value(1), "x");
        assert_eq!(t.value(2), "");
        let v = b.column(3).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(v.values().to_vec(), vec![1.5, 2.5, 3.5]);
    }

    #[test]
    fn discard_keeps_rows_outside_the_range() {
        let mut c = sample();
        c.discard(0, 1_000_000);
        assert_eq!(c.len(), 2);
        let b = c.into_batch();
        let a = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(a.value(0), "B");
        assert!(a.is_null(1));
        let t = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(t.value(0), "x");
        assert_eq!(t.value(1), "");
    }
}
