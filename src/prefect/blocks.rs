//! Block documents on a Prefect server: the `PipelineStateBlock` type and
//! schema (registered as the Python client does), reading and writing
//! documents, and secrets from `Secret` and `gcp-credentials` blocks
//! (refused when they come back masked).

use reqwest::Method;
use serde_json::{json, Value};

use super::{status_kind, Client, ErrorKind, PrefectError, MASKED, STATE_SLUG};
use crate::secret::Secret;

/// A block document as stored.
#[derive(Debug, Clone)]
pub struct BlockDoc {
    pub id: String,
    pub data: Value,
    /// The type and schema it is stored with (absent from an answer that
    /// lacks them), so that writing it back needs no schema lookup.
    pub schema: Option<SchemaIds>,
}

/// Block documents read per request: Prefect's largest page.
const BLOCKS_PER_READ: usize = 200;

/// The ids a `PipelineStateBlock` document is written with.
#[derive(Debug, Clone)]
pub struct SchemaIds {
    pub type_id: String,
    pub schema_id: String,
}

/// A block document name is `^[a-z0-9-]+$`.
pub fn valid_block_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The document name for a job: `{pipeline}` and `{job}` replaced.
pub fn block_name(template: &str, pipeline: &str, job: &str) -> String {
    template
        .replace("{pipeline}", pipeline)
        .replace("{job}", job)
}

/// The `fields` of the `PipelineStateBlock` schema exactly as the Python
/// client sends them (Prefect 3, pydantic 2), so the server files both
/// under one checksum and each side loads what the other wrote.
pub fn state_schema_fields() -> Value {
    json!({
        "block_schema_references": {},
        "block_type_slug": STATE_SLUG,
        "properties": {
            "last_processed_hour": {
                "anyOf": [{"format": "date-time", "type": "string"}, {"type": "null"}],
                "default": null,
                "title": "Last Processed Hour",
                "position": 0
            },
            "pipeline_version": {
                "default": "v1.0.0",
                "title": "Pipeline Version",
                "type": "string",
                "position": 1
            },
            "metadata": {
                "default": {},
                "title": "Metadata",
                "type": "object",
                "position": 2
            }
        },
        "secret_fields": [],
        "title": "PipelineStateBlock",
        "type": "object"
    })
}

impl Client {
    /// A block document from its JSON.
    fn doc_of(&self, v: &Value, what: &str) -> Result<BlockDoc, PrefectError> {
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(BlockDoc {
            id: self.id_of(v, what)?,
            data: v.get("data").cloned().unwrap_or(Value::Null),
            schema: field("block_type_id")
                .zip(field("block_schema_id"))
                .map(|(type_id, schema_id)| SchemaIds { type_id, schema_id }),
        })
    }

    /// The `PipelineStateBlock` type and schema, created when missing the
    /// way the Python client registers them.
    pub async fn ensure_state_schema(&self) -> Result<SchemaIds, PrefectError> {
        let what = format!("block type `{STATE_SLUG}`");
        let path = format!("/block_types/slug/{STATE_SLUG}");
        let r = self.call(Method::GET, &path, None, &what).await?;
        let block_type = match r.status.as_u16() {
            200 => self.json_of(&r, &what)?,
            404 => {
                let create = json!({
                    "name": "PipelineStateBlock",
                    "slug": STATE_SLUG,
                    "logo_url": null,
                    "documentation_url": null,
                    "description": "Checkpoint of one pipeline job (written by duckhour and by Python flows).",
                    "code_example": "```python\npipelinestateblock_block = PipelineStateBlock.load(\"BLOCK_NAME\")\n```",
                });
                let r = self
                    .call(Method::POST, "/block_types/", Some(&create), &what)
                    .await?;
                match r.status.as_u16() {
                    200 | 201 => self.json_of(&r, &what)?,
                    // Created meanwhile by someone else.
                    409 => self.json_of(&self.ok(Method::GET, &path, None, &what).await?, &what)?,
                    _ => return Err(self.err(&what, status_kind(r.status, &r.body))),
                }
            }
            _ => return Err(self.err(&what, status_kind(r.status, &r.body))),
        };
        let type_id = self.id_of(&block_type, &what)?;
        let schema = json!({
            "fields": state_schema_fields(),
            "block_type_id": type_id,
            "capabilities": [],
            "version": "non-versioned",
        });
        let what = "block schema of `PipelineStateBlock`";
        // A server answers a schema it has with that schema; Prefect Cloud
        // answers 409, and the schema is then read back by its fields.
        let r = self
            .call(Method::POST, "/block_schemas/", Some(&schema), what)
            .await?;
        let schema_id = match r.status.as_u16() {
            200 | 201 => self.id_of(&self.json_of(&r, what)?, what)?,
            409 => self.find_state_schema(&type_id, what).await?,
            _ => return Err(self.err(what, status_kind(r.status, &r.body))),
        };
        Ok(SchemaIds { type_id, schema_id })
    }

    /// The id of the `PipelineStateBlock` schema whose fields are exactly
    /// [`state_schema_fields`] (the one the Python class registers).
    async fn find_state_schema(&self, type_id: &str, what: &str) -> Result<String, PrefectError> {
        let body = json!({
            "block_schemas": {"block_type_id": {"any_": [type_id]}},
            "limit": BLOCKS_PER_READ,
        });
        let r = self
            .ok(Method::POST, "/block_schemas/filter", Some(&body), what)
            .await?;
        let Value::Array(schemas) = self.json_of(&r, what)? else {
            return Err(self.err(what, ErrorKind::Protocol("not a list".into())));
        };
        let want = state_schema_fields();
        let same = schemas.iter().find(|v| v.get("fields") == Some(&want));
        match same {
            Some(v) => self.id_of(v, what),
            None => Err(self.err(
                what,
                ErrorKind::Conflict(
                    "the server says the schema exists, but none of the type's schemas has its fields".into(),
                ),
            )),
        }
    }

    /// A block document by type slug and name, with its secrets; `None` when missing.
    pub async fn read_block(
        &self,
        slug: &str,
        name: &str,
        what: &str,
    ) -> Result<Option<BlockDoc>, PrefectError> {
        let path =
            format!("/block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true");
        let r = self.call(Method::GET, &path, None, what).await?;
        match r.status.as_u16() {
            200 => Ok(Some(self.doc_of(&self.json_of(&r, what)?, what)?)),
            404 => Ok(None),
            _ => Err(self.err(what, status_kind(r.status, &r.body))),
        }
    }

    /// The named documents of a block type that exist, by name, read in
    /// one request per [`BLOCKS_PER_READ`] names, without secret values.
    pub async fn read_blocks(
        &self,
        slug: &str,
        names: &[String],
        what: &str,
    ) -> Result<std::collections::HashMap<String, BlockDoc>, PrefectError> {
        let mut found = std::collections::HashMap::new();
        for chunk in names.chunks(BLOCKS_PER_READ) {
            let body = json!({
                "block_documents": {"name": {"any_": chunk}, "is_anonymous": {"eq_": false}},
                "block_types": {"slug": {"any_": [slug]}},
                "include_secrets": false,
                "limit": BLOCKS_PER_READ,
            });
            let r = self
                .call(Method::POST, "/block_documents/filter", Some(&body), what)
                .await?;
            match r.status.as_u16() {
                200 => {}
                404 => return Err(self.err(what, ErrorKind::NoWorkspace)),
                _ => return Err(self.err(what, status_kind(r.status, &r.body))),
            }
            let Value::Array(docs) = self.json_of(&r, what)? else {
                return Err(self.err(what, ErrorKind::Protocol("not a list".into())));
            };
            for v in &docs {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                if chunk.iter().any(|n| n == name) {
                    found.insert(name.to_owned(), self.doc_of(v, what)?);
                }
            }
        }
        Ok(found)
    }

    /// Creates a named document; `Conflict` when the name is taken.
    pub async fn create_block(
        &self,
        name: &str,
        ids: &SchemaIds,
        data: &Value,
        what: &str,
    ) -> Result<BlockDoc, PrefectError> {
        let body = json!({
            "name": name,
            "data": data,
            "block_schema_id": ids.schema_id,
            "block_type_id": ids.type_id,
            "is_anonymous": false,
        });
        let r = self
            .ok(Method::POST, "/block_documents/", Some(&body), what)
            .await?;
        let v = self.json_of(&r, what)?;
        Ok(BlockDoc {
            id: self.id_of(&v, what)?,
            data: data.clone(),
            schema: Some(ids.clone()),
        })
    }

    /// Replaces the document's data (every top-level key is sent).
    pub async fn update_block(
        &self,
        id: &str,
        ids: &SchemaIds,
        data: &Value,
        what: &str,
    ) -> Result<(), PrefectError> {
        let body = json!({"block_schema_id": ids.schema_id, "data": data});
        self.patch_block(id, &body, what).await
    }

    async fn patch_block(&self, id: &str, body: &Value, what: &str) -> Result<(), PrefectError> {
        self.ok(
            Method::PATCH,
            &format!("/block_documents/{id}"),
            Some(body),
            what,
        )
        .await?;
        Ok(())
    }

    /// Writes nothing to the document, as a write: an empty update merged
    /// into its data. Proves the key's role may update blocks (Prefect
    /// Cloud answers 403 for a role below Developer) without touching what
    /// another writer (a Python flow's rewind) may have put there.
    pub async fn touch_block(&self, id: &str, what: &str) -> Result<(), PrefectError> {
        let body = json!({"data": {}, "merge_existing_data": true});
        self.patch_block(id, &body, what).await
    }

    /// A secret: a `Secret` block's `value`, else a `gcp-credentials`
    /// block's `service_account_info` (as JSON text); `None` when neither exists.
    pub async fn secret(&self, name: &str) -> Result<Option<Secret>, PrefectError> {
        if !valid_block_name(name) {
            return Ok(None);
        }
        let what = format!("secret block `{name}`");
        if let Some(doc) = self.read_block("secret", name, &what).await? {
            return match doc.data.get("value") {
                Some(Value::String(s)) if s == MASKED => Err(self.err(&what, ErrorKind::Masked)),
                Some(Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
                Some(v) if !v.is_null() => Ok(Some(Secret::new(v.to_string()))),
                _ => Err(self.err(&what, ErrorKind::Protocol("no `value`".into()))),
            };
        }
        let what = format!("gcp-credentials block `{name}`");
        if let Some(doc) = self.read_block("gcp-credentials", name, &what).await? {
            let masked = |v: &Value| match v {
                Value::String(s) => s == MASKED,
                Value::Object(m) => m.values().any(|v| v.as_str() == Some(MASKED)),
                _ => false,
            };
            return match doc.data.get("service_account_info") {
                Some(v) if masked(v) => Err(self.err(&what, ErrorKind::Masked)),
                Some(Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
                Some(v @ Value::Object(_)) => Ok(Some(Secret::new(v.to_string()))),
                _ => Err(self.err(
                    &what,
                    ErrorKind::Protocol("no `service_account_info`".into()),
                )),
            };
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names() {
        assert!(valid_block_name("hourly-co"));
        assert!(valid_block_name("pipeline-state"));
        assert!(!valid_block_name("hourly_co"));
        assert!(!valid_block_name("Hourly"));
        assert!(!valid_block_name(""));
    }

    #[test]
    fn names_from_template() {
        assert_eq!(block_name("{pipeline}-{job}", "hourly", "co"), "hourly-co");
        assert_eq!(
            block_name("pipeline-state", "hourly", "co"),
            "pipeline-state"
        );
    }
}
