//! Runs SQL statements given as arguments against a DuckDB database (the
//! first argument: a file, or `:memory:`) and prints rows (statements that
//! change data, `INSERT`/`CREATE`/`DELETE`/`UPDATE`/`DROP`, just run). A development aid:
//! the embedded DuckDB has no ICU and no CLI, so this is how to look inside.
fn main() {
    let mut args = std::env::args().skip(1);
    let db = args.next().unwrap_or_else(|| ":memory:".into());
    let conn = if db == ":memory:" {
        duckdb::Connection::open_in_memory().unwrap()
    } else {
        duckdb::Connection::open(&db).unwrap()
    };
    for sql in args {
        let verb = sql.trim_start().to_ascii_uppercase();
        if ["INSERT", "CREATE", "DELETE", "UPDATE", "DROP"]
            .iter()
            .any(|v| verb.starts_with(v))
        {
            if let Err(e) = conn.execute_batch(&sql) {
                println!("ERROR {sql}: {e}");
            }
            continue;
        }
        let wrapped = format!("SELECT COLUMNS(*)::VARCHAR FROM ({sql})");
        match conn.prepare(&wrapped) {
            Ok(mut st) => {
                let mut rows = st.query([]).unwrap();
                while let Some(r) = rows.next().unwrap() {
                    let n = r.as_ref().column_count();
                    let v: Vec<String> = (0..n)
                        .map(|i| {
                            r.get::<_, Option<String>>(i)
                                .unwrap()
                                .unwrap_or_else(|| "NULL".into())
                        })
                        .collect();
                    println!("{}", v.join(" | "));
                }
            }
            Err(e) => println!("ERROR {sql}: {e}"),
        }
    }
}
