//! Opening a DuckDB sink: `ATTACH` of a local file (made with its
//! directory; a file another process holds is `Busy`) or of a MotherDuck
//! database with its token, which templates must not read back.

use std::path::{Path, PathBuf};

use ::duckdb::Connection;

use super::{DuckSink, ROW_GROUP_ROWS};
use crate::secret::{resolve, SecretSource};
use crate::sinks::SinkError;
use crate::template::{quote_ident, quote_literal};

impl DuckSink {
    pub fn prepare(
        &mut self,
        conn: &Connection,
        secrets: &dyn SecretSource,
        home: &Path,
    ) -> Result<(), SinkError> {
        let path =
            resolve(&self.path, "`path`", secrets).map_err(|e| self.setup_err(e.to_string()))?;
        let path = path.expose().to_owned();
        // A connection string may carry a token (`md:db?motherduck_token=…`,
        // documented by MotherDuck): its key-like parameters are secrets.
        crate::secret::register_params(&path);
        match path.strip_prefix("md:") {
            Some(rest) => self.attach_motherduck(conn, rest, secrets, home)?,
            None => self.attach_file(conn, &path)?,
        }
        conn.execute_batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}.{}",
            quote_ident(&self.alias),
            quote_ident(&self.schema)
        ))
        .map_err(|e| self.setup_err(e.to_string()))?;
        Ok(())
    }

    /// Attaches MotherDuck database `md:<rest>` with its token (`token:`,
    /// the connection string's, or the environment's), passed as a
    /// setting and cleared once attached.
    fn attach_motherduck(
        &self,
        conn: &Connection,
        rest: &str,
        secrets: &dyn SecretSource,
        home: &Path,
    ) -> Result<(), SinkError> {
        let (db, params) = split_params(rest);
        let shown = format!("md:{db}");
        let token = self.motherduck_token(&shown, &params, secrets)?;
        // Other parameters (e.g. `saas_mode=true`) stay on the ATTACH.
        let rest_params: Vec<String> = params
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("motherduck_token"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let target = if rest_params.is_empty() {
            shown.clone()
        } else {
            format!("{shown}?{}", rest_params.join("&"))
        };
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
            .map_err(|e| self.setup_err(format!("cannot load the MotherDuck extension: {e}")))?;
        conn.execute_batch(&format!(
            "SET motherduck_token = {}",
            quote_literal(token.expose())
        ))
        .map_err(|e| self.setup_err(format!("cannot set the MotherDuck token: {e}")))?;
        let attached = conn.execute_batch(&format!(
            "ATTACH {} AS {}",
            quote_literal(&target),
            quote_ident(&self.alias)
        ));
        // The token was needed to connect; templates run on this
        // database and must not read it back (`current_setting`).
        let hidden = conn
            .execute_batch("RESET GLOBAL motherduck_token")
            .and_then(|_| {
                conn.query_row(
                    "SELECT current_setting('motherduck_token')::VARCHAR",
                    [],
                    |r| r.get::<_, Option<String>>(0),
                )
            });
        attached.map_err(|e| {
            self.setup_err(format!("cannot attach MotherDuck database `{shown}`: {e}"))
        })?;
        match hidden {
            Ok(v) if v.as_deref() != Some(token.expose()) => {}
            _ => {
                return Err(self.setup_err(
                    "cannot clear the MotherDuck token from the session after attaching: templates could read it",
                ))
            }
        }
        Ok(())
    }

    /// MotherDuck's token: `token:`, else the connection string's
    /// `motherduck_token`, else the environment's.
    fn motherduck_token(
        &self,
        shown: &str,
        params: &[(String, String)],
        secrets: &dyn SecretSource,
    ) -> Result<crate::secret::Secret, SinkError> {
        let token = match &self.token {
            Some(t) => {
                Some(resolve(t, "`token`", secrets).map_err(|e| self.setup_err(e.to_string()))?)
            }
            None => params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("motherduck_token"))
                .map(|(_, v)| crate::secret::Secret::new(v.clone()))
                .or_else(|| {
                    ["motherduck_token", "MOTHERDUCK_TOKEN"]
                        .iter()
                        .find_map(|n| std::env::var(n).ok())
                        .filter(|v| !v.is_empty())
                        .map(|v| {
                            crate::secret::register(&v);
                            crate::secret::Secret::new(v)
                        })
                }),
        };
        token.ok_or_else(|| {
            self.setup_err(format!(
                "MotherDuck (`{shown}`) needs a token: `token:` (e.g. `token: ${{secret:motherduck-token}}`), `?motherduck_token=` in `path`, or the `motherduck_token` environment variable"
            ))
        })
    }

    /// Attaches the local file `path` (relative to the spec's directory),
    /// making its directory; a file another process holds is `Busy`.
    fn attach_file(&mut self, conn: &Connection, path: &str) -> Result<(), SinkError> {
        let file = if Path::new(&path).is_absolute() {
            PathBuf::from(&path)
        } else {
            self.dir.join(path)
        };
        let parent = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .map_err(|e| self.setup_err(format!("{}: {e}", parent.display())))?;
        // Absolute, so that the reopen stays inside the directories
        // the confined database may reach (`duck::confine`).
        let parent = parent
            .canonicalize()
            .map_err(|e| self.setup_err(format!("{}: {e}", parent.display())))?;
        let file = parent.join(file.file_name().unwrap_or_default());
        let attach = format!(
            "ATTACH {} AS {} (ROW_GROUP_SIZE {ROW_GROUP_ROWS})",
            quote_literal(&file.display().to_string()),
            quote_ident(&self.alias)
        );
        conn.execute_batch(&attach).map_err(|e| {
            let message = format!("cannot open {}: {e}", file.display());
            // DuckDB's word for a file another process holds.
            if message.contains("Could not set lock on file") {
                SinkError::Busy {
                    sink: self.name.clone(),
                    message,
                }
            } else {
                self.setup_err(message)
            }
        })?;
        self.reattach = Some(attach);
        self.local_dir = Some(parent);
        Ok(())
    }
}

/// `db?k=v&k2=v2` into the database and its parameters.
fn split_params(s: &str) -> (&str, Vec<(String, String)>) {
    match s.split_once('?') {
        None => (s, Vec::new()),
        Some((db, q)) => (
            db,
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (p.to_owned(), String::new()),
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_parameters() {
        assert_eq!(split_params("aq"), ("aq", vec![]));
        assert_eq!(
            split_params("aq?motherduck_token=t0k&saas_mode=true"),
            (
                "aq",
                vec![
                    ("motherduck_token".to_owned(), "t0k".to_owned()),
                    ("saas_mode".to_owned(), "true".to_owned())
                ]
            )
        );
    }
}
