//! A model's work in the embedded DuckDB: its input tables (the hourly
//! rows it reads and the calendar of their days), its result, and the
//! result contract, for one range of output keys.
//!
//! Tables are named per model (`model_hourly_<m>`, `model_calendar_<m>`,
//! `model_result_<m>`) and dropped when the range is written.

use duckdb::Connection;

use crate::spec::{Hour, Model};
use crate::template::{quote_ident, quote_literal};
use crate::time::keys::{self, Grain, KeyRange};

/// Why a model's computation failed before any sink was written.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("model `{model}`: reading the hourly rows: {message}")]
    Input { model: String, message: String },
    #[error("model `{model}`: template `{template}` failed: {message}")]
    Sql {
        model: String,
        template: String,
        message: String,
    },
    /// A row the sinks would not replace on the next recomputation.
    #[error("model `{model}`: template `{template}` broke the result contract: every row must have `{column}` in {range}; first offending row: {row}; no sink was written")]
    Contract {
        model: String,
        template: String,
        column: &'static str,
        range: String,
        row: String,
    },
}

pub fn hourly_table(m: &Model) -> String {
    format!("model_hourly_{}", m.name)
}
pub fn calendar_table(m: &Model) -> String {
    format!("model_calendar_{}", m.name)
}
pub fn newest_table(m: &Model) -> String {
    format!("model_newest_{}", m.name)
}
pub fn result_table(m: &Model) -> String {
    format!("model_result_{}", m.name)
}

fn ts(h: Hour) -> String {
    format!("TIMESTAMPTZ {}", quote_literal(&h.to_string()))
}

/// A key as a DuckDB literal of its column's type.
pub fn key_literal(grain: Grain, k: i64) -> String {
    keys::literal(grain, k, ts)
}

/// The views `sql` (a model's rendered template) names, of
/// `model_hourly_<m>` := the rows of `sources` (the sink tables holding the
/// model's jobs, as the connection names them, or copies read back) for
/// its jobs in `[from, to)`, with `h`, the hour's number since the epoch;
/// `model_newest_<m>`: per job, the number of its newest hour at or after
/// `from` in `newest_sources` (the same tables, or copies of their newest
/// rows from `from` on), found by `newest` (see [`Newest`]); and
/// `model_calendar_<m>`. A view not named is not made: a year's calendar
/// cost 2-3 ms to bind, for a template adding up day rows.
/// Returns the newest of those hours: the newest loaded hour read.
#[allow(clippy::too_many_arguments)]
pub fn load_inputs(
    conn: &Connection,
    m: &Model,
    sql: &str,
    sources: &[String],
    newest_sources: &[String],
    newest: &mut Newest,
    from: Hour,
    to: Hour,
) -> Result<Option<i64>, StageError> {
    let err = |e: duckdb::Error| StageError::Input {
        model: m.name.clone(),
        message: e.to_string(),
    };
    let named = |view: String| sql.contains(&quote_ident(&view));
    let jobs: Vec<String> = m.jobs.iter().map(|j| quote_literal(j)).collect();
    let selects: Vec<String> = sources
        .iter()
        .map(|t| {
            format!(
                "SELECT *, epoch_us(hour_start) // 3600000000 AS h FROM {t} \
                 WHERE pollutant IN ({}) AND hour_start >= {} AND hour_start < {}",
                jobs.join(", "),
                ts(from),
                ts(to)
            )
        })
        .collect();
    // A view: a template reads only the columns and hours it needs.
    if named(hourly_table(m)) {
        conn.execute_batch(&format!(
            "CREATE OR REPLACE VIEW {} AS {}",
            quote_ident(&hourly_table(m)),
            selects.join(" UNION ALL BY NAME ")
        ))
        .map_err(err)?;
    }
    let newest = newest
        .get(conn, &m.jobs, newest_sources, from)
        .map_err(err)?;
    if named(newest_table(m)) {
        let rows = if newest.is_empty() {
            "SELECT NULL::VARCHAR AS pollutant, NULL::BIGINT AS h WHERE false".to_owned()
        } else {
            let values: Vec<String> = newest
                .iter()
                .map(|(p, h)| format!("({}, {h}::BIGINT)", quote_literal(p)))
                .collect();
            format!(
                "SELECT * FROM (VALUES {}) v(pollutant, h)",
                values.join(", ")
            )
        };
        conn.execute_batch(&format!(
            "CREATE OR REPLACE VIEW {} AS {rows}",
            quote_ident(&newest_table(m))
        ))
        .map_err(err)?;
    }
    if named(calendar_table(m)) {
        load_calendar(conn, m, from, to).map_err(err)?;
    }
    Ok(newest.iter().map(|(_, h)| *h).max())
}

/// Newest hours already found in a run, per job and set of source tables:
/// the hourly tables do not change while a run's models are computed, so
/// one model's search answers the next (each search cost 2-4 ms of a
/// model's 15-20 in an hourly run). Only for the sink's own tables: copies
/// read back from BigQuery hold one range's rows, and get a fresh `Newest`.
#[derive(Debug, Default)]
pub struct Newest {
    known: std::collections::HashMap<(Vec<String>, String), Known>,
}

#[derive(Debug, Clone, Copy)]
enum Known {
    /// The job's newest hour (its number) in the tables.
    At(i64),
    /// No row of the job at or after this hour number.
    NoneFrom(i64),
}

impl Newest {
    /// Per job of `jobs` with rows in `sources` at or after `from`: the
    /// number of its newest hour, as [`newest_hours`] finds it; searched
    /// only for the jobs not known yet.
    pub fn get(
        &mut self,
        conn: &Connection,
        jobs: &[String],
        sources: &[String],
        from: Hour,
    ) -> duckdb::Result<Vec<(String, i64)>> {
        let first = keys::hour_number(from);
        let key = |j: &String| (sources.to_vec(), j.clone());
        let unknown: Vec<String> = jobs
            .iter()
            .filter(|j| match self.known.get(&key(j)) {
                Some(Known::At(_)) => false,
                Some(Known::NoneFrom(h)) => first < *h,
                None => true,
            })
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let found = newest_hours(conn, &unknown, sources, from)?;
            for j in &unknown {
                let k = match found.iter().find(|(p, _)| p == j) {
                    Some((_, h)) => Known::At(*h),
                    None => Known::NoneFrom(first),
                };
                self.known.insert(key(j), k);
            }
        }
        Ok(jobs
            .iter()
            .filter_map(|j| match self.known.get(&key(j)) {
                Some(Known::At(h)) if *h >= first => Some((j.clone(), *h)),
                _ => None,
            })
            .collect())
    }
}

/// Per job of `jobs` with rows in `sources` at or after `from`: the number
/// of its newest hour. Whether a later hour exists is not in a model's
/// window (an outage at its end would hide it), so the search reaches past
/// its end. It starts at the newest hour of any job and looks back in
/// windows that double (1, 2, 4, … hours) for the jobs not found yet, down
/// to `from`: each window reads only the row groups whose zone maps reach
/// into it, so a year model's search costs the same in December as in
/// January (one scan from `from` read the year so far: 8-12 ms a model on
/// a year of 20 stations, against about 1 ms).
fn newest_hours(
    conn: &Connection,
    jobs: &[String],
    sources: &[String],
    from: Hour,
) -> duckdb::Result<Vec<(String, i64)>> {
    if jobs.is_empty() || sources.is_empty() {
        return Ok(Vec::new());
    }
    let union = |select: &str, filter: &str| -> String {
        sources
            .iter()
            .map(|t| format!("SELECT {select} FROM {t} WHERE {filter}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    let newest_any: Option<i64> = conn.query_row(
        &format!(
            "SELECT epoch_us(max(hour_start)) // 3600000000 FROM ({})",
            union("hour_start", &format!("hour_start >= {}", ts(from)))
        ),
        [],
        |r| r.get(0),
    )?;
    let Some(newest_any) = newest_any else {
        return Ok(Vec::new());
    };
    let first = keys::hour_number(from);
    let mut found: Vec<(String, i64)> = Vec::new();
    let mut back = 0i64;
    loop {
        let lo = (newest_any - back).max(first);
        let missing: Vec<String> = jobs
            .iter()
            .filter(|j| !found.iter().any(|(p, _)| p == *j))
            .map(|j| quote_literal(j))
            .collect();
        let filter = format!(
            "pollutant IN ({}) AND hour_start >= {}",
            missing.join(", "),
            ts(keys::hour_of(lo))
        );
        let mut st = conn.prepare(&format!(
            "SELECT pollutant, epoch_us(max(hour_start)) // 3600000000 FROM ({}) GROUP BY pollutant",
            union("pollutant, hour_start", &filter)
        ))?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            found.push(row?);
        }
        if found.len() == jobs.len() || lo == first {
            return Ok(found);
        }
        back = (back * 2).max(1);
    }
}

/// `model_calendar_<m>`: every UTC hour of the local days touching `[from,
/// to)`, with `h`, `day` (DATE), `year` and `hours_in_day` (23, 24, 25).
fn load_calendar(conn: &Connection, m: &Model, from: Hour, to: Hour) -> duckdb::Result<()> {
    let days = keys::days(m.zone, from, to);
    let values: Vec<String> = days
        .iter()
        .map(|d| {
            format!(
                "({}, {}, DATE '{}')",
                keys::hour_number(d.first),
                d.hours,
                d.date
            )
        })
        .collect();
    let rows = if values.is_empty() {
        "SELECT NULL::BIGINT AS first, NULL::BIGINT AS n, NULL::DATE AS day WHERE false".to_owned()
    } else {
        format!(
            "SELECT * FROM (VALUES {}) v(first, n, day)",
            values.join(", ")
        )
    };
    // Views: a template that does not read them costs nothing.
    conn.execute_batch(&format!(
        "CREATE OR REPLACE VIEW {} AS \
         SELECT to_timestamp((first + i) * 3600) AS hour_start, first + i AS h, day, \
                year(day)::INTEGER AS year, n::INTEGER AS hours_in_day \
         FROM (SELECT first, n, day, unnest(range(n)) AS i FROM ({rows}))",
        quote_ident(&calendar_table(m))
    ))
}

/// An empty `model_hourly_<m>` shaped like `hourly` (a job's result
/// columns), for binding a template without data.
pub fn empty_inputs(conn: &Connection, m: &Model, hourly: &str) -> Result<(), StageError> {
    let err = |e: duckdb::Error| StageError::Input {
        model: m.name.clone(),
        message: e.to_string(),
    };
    conn.execute_batch(&format!(
        "CREATE OR REPLACE VIEW {} AS SELECT *, epoch_us(hour_start) // 3600000000 AS h FROM {hourly} LIMIT 0",
        quote_ident(&hourly_table(m))
    ))
    .map_err(err)?;
    conn.execute_batch(&format!(
        "CREATE OR REPLACE VIEW {} AS SELECT pollutant, h FROM {} LIMIT 0",
        quote_ident(&newest_table(m)),
        quote_ident(&hourly_table(m))
    ))
    .map_err(err)?;
    let t = Hour::parse("2000-01-01T00:00:00Z").expect("constant");
    load_calendar(conn, m, t, t).map_err(err)
}

/// Renders `m`'s template for the keys `r`, over its input relations as
/// [`load_inputs`] and [`load_upstream`] name them.
pub fn render(
    templates: &crate::template::Templates,
    pipeline: &str,
    m: &Model,
    r: KeyRange,
) -> Result<String, crate::spec::Diagnostic> {
    let (from, to) = keys::inputs(m.zone, m.lookback_hours, r);
    let inputs = m
        .depends_on
        .iter()
        .map(|u| (u.clone(), quote_ident(&input_view(m, u))))
        .collect();
    templates.render_model(&crate::template::ModelInput {
        pipeline,
        model: m,
        hourly: &quote_ident(&hourly_table(m)),
        calendar: &quote_ident(&calendar_table(m)),
        newest: &quote_ident(&newest_table(m)),
        inputs: &inputs,
        keys_from: key_literal(m.grain, r.from),
        keys_to: key_literal(m.grain, r.to),
        key_hours: keys::key_hours(m.zone, r),
        years: keys::years(m.zone, r)
            .iter()
            .map(|y| serde_json::json!({"year": y.year, "first_h": y.first_h, "hours": y.hours}))
            .collect(),
        hours_from: from,
        hours_to: to,
    })
}

/// Runs the rendered SQL into `model_result_<m>` and checks the contract:
/// every row's key lies in `r` (sinks replace exactly that range, so a row
/// outside it would be duplicated by every recomputation). Returns the rows.
pub fn compute(conn: &Connection, m: &Model, sql: &str, r: KeyRange) -> Result<u64, StageError> {
    let result = quote_ident(&result_table(m));
    let sql_err = |e: duckdb::Error| StageError::Sql {
        model: m.name.clone(),
        template: m.template.clone(),
        message: e.to_string(),
    };
    conn.execute_batch(&format!("CREATE OR REPLACE TABLE {result} AS {sql}"))
        .map_err(sql_err)?;
    let col = m.grain.key_column();
    let contract = |row: String| StageError::Contract {
        model: m.name.clone(),
        template: m.template.clone(),
        column: col,
        range: r.to_string(),
        row,
    };
    let key = quote_ident(col);
    let inside = format!(
        "{key} >= {} AND {key} < {}",
        key_literal(m.grain, r.from),
        key_literal(m.grain, r.to)
    );
    // How many rows, and how many outside the range; the first row outside
    // is read only when there is one (casting every row to text for it cost
    // 50 ms a month of a model's rows).
    let outside = format!("{key} IS NULL OR NOT ({inside})");
    let checked = conn.query_row(
        &format!("SELECT count(*), count(*) FILTER (WHERE {outside}) FROM {result}"),
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
    );
    match checked {
        Ok((n, 0)) => Ok(n as u64),
        Ok(_) => {
            let row = conn
                .query_row(
                    &format!(
                        "SELECT duckhour_row::VARCHAR FROM {result} duckhour_row WHERE {outside} LIMIT 1"
                    ),
                    [],
                    |r| r.get::<_, String>(0),
                )
                .unwrap_or_else(|e| format!("? ({e})"));
            Err(contract(row))
        }
        Err(e) => Err(contract(format!(
            "? (the result has no comparable `{col}` column: {e})"
        ))),
    }
}

/// The view of an upstream model `u`'s rows that `m` reads.
pub fn input_view(m: &Model, u: &str) -> String {
    format!("model_input_{}_{u}", m.name)
}

/// `model_input_<m>_<u>` := the rows of `source` (model `u`'s table, as
/// the connection names it) whose key falls in the hours `[from, to)`.
pub fn load_upstream(
    conn: &Connection,
    m: &Model,
    u: &Model,
    source: &str,
    from: Hour,
    to: Hour,
) -> Result<(), StageError> {
    let r = KeyRange {
        grain: u.grain,
        from: keys::key_of(u.grain, u.zone, from),
        to: keys::key_of(u.grain, u.zone, to.plus(-1)) + 1,
    };
    let col = quote_ident(u.grain.key_column());
    conn.execute_batch(&format!(
        "CREATE OR REPLACE VIEW {} AS SELECT * FROM {source} WHERE {}",
        quote_ident(&input_view(m, &u.name)),
        keys::between(&col, r, key_literal)
    ))
    .map_err(|e| StageError::Input {
        model: m.name.clone(),
        message: format!("reading model `{}`: {e}", u.name),
    })
}

/// Drops the model's result. Its input views stay (they hold no rows, and
/// the next range replaces them): dropping them cost a statement each.
pub fn clear(conn: &Connection, m: &Model) {
    let _ = conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS {}",
        quote_ident(&result_table(m))
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Newest hours found by the doubling windows equal a plain maximum
    /// per job over `[from, ∞)`, computed here row by row: with a job in
    /// an outage since long before the newest hour, a job with no rows at
    /// all, rows split over two tables, and `from` after a job's last row.
    #[test]
    fn newest_hours_equal_a_plain_maximum() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE a (pollutant VARCHAR, hour_start TIMESTAMP WITH TIME ZONE);
             CREATE TABLE b (pollutant VARCHAR, hour_start TIMESTAMP WITH TIME ZONE);",
        )
        .unwrap();
        // co every hour up to 5000 (in a), no2 up to 1234 then an outage
        // (in b), other pipelines' rows up to 5003.
        let mut rows: Vec<(&str, &str, i64)> = Vec::new();
        for h in 0..=5000 {
            rows.push(("a", "co", h));
        }
        for h in (0..=1234).step_by(7) {
            rows.push(("b", "no2", h));
        }
        rows.push(("a", "other", 5003));
        for t in ["a", "b"] {
            let values: Vec<String> = rows
                .iter()
                .filter(|r| r.0 == t)
                .map(|(_, p, h)| format!("('{p}', to_timestamp({h} * 3600))"))
                .collect();
            conn.execute_batch(&format!("INSERT INTO {t} VALUES {}", values.join(", ")))
                .unwrap();
        }
        let jobs: Vec<String> = ["co", "no2", "o3"].map(String::from).to_vec();
        let sources = ["a".to_owned(), "b".to_owned()];
        for from in [0i64, 100, 1230, 1234, 1235, 4999, 5001] {
            let mut got = newest_hours(&conn, &jobs, &sources, keys::hour_of(from)).unwrap();
            got.sort();
            let mut want: Vec<(String, i64)> = jobs
                .iter()
                .filter_map(|j| {
                    rows.iter()
                        .filter(|(_, p, h)| p == j && *h >= from)
                        .map(|r| r.2)
                        .max()
                        .map(|h| (j.clone(), h))
                })
                .collect();
            want.sort();
            assert_eq!(got, want, "from hour {from}");
        }
        assert_eq!(
            newest_hours(&conn, &jobs, &[], keys::hour_of(0)).unwrap(),
            vec![]
        );
    }

    /// A run's models share the newest hours: a later `from` is answered
    /// from what an earlier search found (the rows deleted in between do
    /// not change it), and only a job not found at or after a later hour
    /// than asked is searched again.
    #[test]
    fn newest_hours_are_found_once_per_run() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE a (pollutant VARCHAR, hour_start TIMESTAMP WITH TIME ZONE);
             INSERT INTO a SELECT 'co', to_timestamp(h * 3600) FROM range(0, 101) t(h);
             INSERT INTO a SELECT 'no2', to_timestamp(h * 3600) FROM range(0, 41) t(h);",
        )
        .unwrap();
        let jobs: Vec<String> = ["co", "no2"].map(String::from).to_vec();
        let sources = ["a".to_owned()];
        let mut newest = Newest::default();
        let got =
            |n: &mut Newest, from: i64| n.get(&conn, &jobs, &sources, keys::hour_of(from)).unwrap();
        assert_eq!(got(&mut newest, 50), vec![("co".to_owned(), 100)]);
        conn.execute_batch("DELETE FROM a WHERE pollutant = 'co'")
            .unwrap();
        // co is known (its newest hour is 100); no2 has none from 50 on.
        assert_eq!(got(&mut newest, 60), vec![("co".to_owned(), 100)]);
        assert_eq!(got(&mut newest, 101), vec![]);
        // Before 50, no2 is searched again; co still comes from the first search.
        assert_eq!(
            got(&mut newest, 10),
            vec![("co".to_owned(), 100), ("no2".to_owned(), 40)]
        );
        assert_eq!(
            got(&mut Newest::default(), 10),
            vec![("no2".to_owned(), 40)]
        );
    }

    /// A result inside its keys passes with its row count;
    /// one row outside fails the contract, quoting that row.
    #[test]
    fn the_result_contract_quotes_the_row_outside() {
        let m = Model {
            name: "m".into(),
            template: "m.sql".into(),
            grain: Grain::Hour,
            lookback_hours: 0,
            zone: crate::time::Zone::UTC,
            table: "m".into(),
            jobs: vec!["co".into()],
            tags: vec![],
            hourly_tables: vec![],
            depends_on: vec![],
            params: Default::default(),
            events: None,
        };
        let conn = Connection::open_in_memory().unwrap();
        let r = KeyRange {
            grain: Grain::Hour,
            from: 490_000,
            to: 490_010,
        };
        let inside =
            "SELECT to_timestamp(h * 3600) AS hour_start, h AS v FROM range(490000, 490010) t(h)";
        assert_eq!(compute(&conn, &m, inside, r).unwrap(), 10);
        let with_one_outside = format!("{inside} UNION ALL SELECT to_timestamp(490010 * 3600), 7");
        let e = compute(&conn, &m, &with_one_outside, r)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("broke the result contract: every row must have `hour_start` in hour")
                && e.contains(
                    "first offending row: {'hour_start': '2025-11-25 02:00:00+00', 'v': 7}"
                ),
            "{e}"
        );
    }
}
