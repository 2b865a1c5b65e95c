//! DuckDB files and MotherDuck (`md:`), through `ATTACH`.
//!
//! Each load is one transaction on the attached database:
//! `DELETE` the batch's (job, hours), `INSERT` the batch's rows, `COMMIT`.
//! The target table is created from the result's schema when missing.
//! Loads into one sink are serialized (jobs run concurrently, and DuckDB
//! would abort one of two transactions touching the same table).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ::duckdb::Connection;

use super::SinkError;
use crate::duck::result_table;
use crate::plan::Batch;
use crate::secret::{resolve, SecretSource};
use crate::template::{quote_ident, quote_literal};

pub struct DuckSink {
    name: String,
    path: String,
    token: Option<String>,
    schema: String,
    dir: PathBuf,
    alias: String,
    lock: Mutex<()>,
}

impl DuckSink {
    pub fn new(
        name: &str,
        path: String,
        token: Option<String>,
        schema: String,
        dir: PathBuf,
    ) -> DuckSink {
        DuckSink {
            name: name.to_owned(),
            path,
            token,
            schema,
            dir,
            alias: format!("sink_{}", name.replace('-', "_")),
            lock: Mutex::new(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn setup_err(&self, message: impl Into<String>) -> SinkError {
        SinkError::Setup {
            sink: self.name.clone(),
            message: message.into(),
        }
    }

    pub fn prepare(
        &mut self,
        conn: &Connection,
        secrets: &dyn SecretSource,
        home: &Path,
    ) -> Result<(), SinkError> {
        let path =
            resolve(&self.path, "`path`", secrets).map_err(|e| self.setup_err(e.to_string()))?;
        let path = path.expose().to_owned();
        if let Some(db) = path.strip_prefix("md:") {
            let Some(token) = &self.token else {
                return Err(self.setup_err(format!(
                    "MotherDuck (`{path}`) needs `token` (e.g. `token: ${{secret:motherduck-token}}`)"
                )));
            };
            let token =
                resolve(token, "`token`", secrets).map_err(|e| self.setup_err(e.to_string()))?;
            std::fs::create_dir_all(home)
                .map_err(|e| self.setup_err(format!("home directory {}: {e}", home.display())))?;
            // The extension needs a writable home; the token is passed as a setting, never in SQL text we log.
            conn.execute_batch(&format!(
                "SET home_directory = {}",
                quote_literal(&home.display().to_string())
            ))
            .map_err(|e| self.setup_err(e.to_string()))?;
            // The extension is loaded explicitly (installed first when missing):
            // without network its install or init fails, and we say so here.
            conn.execute_batch("LOAD motherduck")
                .or_else(|_| conn.execute_batch("INSTALL motherduck; LOAD motherduck"))
                .map_err(|e| {
                    self.setup_err(format!("cannot load the MotherDuck extension: {e}"))
                })?;
            // Errors are scrubbed of the token in case one echoes the statement.
            conn.execute_batch(&format!(
                "SET motherduck_token = {}",
                quote_literal(token.expose())
            ))
            .map_err(|e| {
                let reason = scrub(&e.to_string(), token.expose());
                self.setup_err(format!("cannot set the MotherDuck token: {reason}"))
            })?;
            conn.execute_batch(&format!(
                "ATTACH {} AS {}",
                quote_literal(&format!("md:{db}")),
                quote_ident(&self.alias)
            ))
            .map_err(|e| {
                self.setup_err(format!(
                    "cannot attach MotherDuck database `{db}`: {}",
                    scrub(&e.to_string(), token.expose())
                ))
            })?;
        } else {
            let file = if Path::new(&path).is_absolute() {
                PathBuf::from(&path)
            } else {
                self.dir.join(&path)
            };
            if let Some(parent) = file.parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| self.setup_err(format!("{}: {e}", parent.display())))?;
                }
            }
            conn.execute_batch(&format!(
                "ATTACH {} AS {}",
                quote_literal(&file.display().to_string()),
                quote_ident(&self.alias)
            ))
            .map_err(|e| self.setup_err(format!("cannot open {}: {e}", file.display())))?;
        }
        conn.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}.{}",
            quote_ident(&self.alias),
            quote_ident(&self.schema)
        ))
        .map_err(|e| self.setup_err(e.to_string()))?;
        Ok(())
    }

    fn target(&self, table: &str) -> String {
        format!(
            "{}.{}.{}",
            quote_ident(&self.alias),
            quote_ident(&self.schema),
            quote_ident(table)
        )
    }

    pub fn load(
        &self,
        conn: &Connection,
        job: &str,
        table: &str,
        b: Batch,
    ) -> Result<u64, SinkError> {
        let err = |message: String| SinkError::Load {
            sink: self.name.clone(),
            range: b.to_string(),
            message,
        };
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let target = self.target(table);
        let result = result_table(job);
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM {result} LIMIT 0"
        ))
        .map_err(|e| err(e.to_string()))?;
        let from = quote_literal(&b.from.to_string());
        let to = quote_literal(&b.to.to_string());
        let sql = format!(
            "BEGIN TRANSACTION;
             DELETE FROM {target} WHERE pollutant = {job_lit} AND hour_start >= {from}::TIMESTAMPTZ AND hour_start < {to}::TIMESTAMPTZ;
             INSERT INTO {target} BY NAME SELECT * FROM {result};
             COMMIT;",
            job_lit = quote_literal(job),
        );
        if let Err(e) = conn.execute_batch(&sql) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(err(e.to_string()));
        }
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {result}"), [], |r| r.get(0))
            .map_err(|e| err(e.to_string()))?;
        Ok(n as u64)
    }
}

/// Removes a secret from a message that might echo it.
fn scrub(message: &str, secret: &str) -> String {
    if secret.is_empty() {
        message.to_owned()
    } else {
        message.replace(secret, "**REDACTED**")
    }
}
