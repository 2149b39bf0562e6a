//! Firehose's record format conversion reads its schemas from the Glue
//! Data Catalog: the binary bridges the two services, so neither depends on
//! the other (as `sink.rs` does for delivered objects).

use ripstream_firehose::conversion::{SchemaError, SchemaSource, TableColumns, TableRef};
use ripstream_firehose::sink::BoxFuture;
use ripstream_glue::{Error as GlueError, Glue};
use serde_json::{Value, json};

/// Tables are read as GetTableVersion reads them (`LATEST` is the current
/// version), in-process, at every flush.
#[derive(Debug, Clone)]
pub struct GlueSchemas {
    glue: Glue,
    region: String,
}

impl GlueSchemas {
    pub fn new(glue: Glue, region: &str) -> GlueSchemas {
        GlueSchemas {
            glue,
            region: region.to_string(),
        }
    }
}

impl SchemaSource for GlueSchemas {
    fn columns<'a>(&'a self, t: &'a TableRef) -> BoxFuture<'a, Result<TableColumns, SchemaError>> {
        Box::pin(async move {
            // This server holds one account's catalog in one region.
            if let Some(c) = t.catalog_id.as_deref()
                && c != self.glue.account()
            {
                return Err(SchemaError::NotFound(format!(
                    "Catalog {c} is not this server's Glue Data Catalog ({}).",
                    self.glue.account()
                )));
            }
            if let Some(r) = t.region.as_deref()
                && r != self.region
            {
                return Err(SchemaError::NotFound(format!(
                    "This server's Glue Data Catalog is in {}, not {r}.",
                    self.region
                )));
            }
            let out = self
                .glue
                .get_table_version(json!({
                    "DatabaseName": t.database,
                    "TableName": t.table,
                    "VersionId": t.version_id,
                }))
                .await
                .map_err(|e| match e {
                    GlueError::EntityNotFound(m) | GlueError::InvalidInput(m) => {
                        SchemaError::NotFound(m)
                    }
                    other => SchemaError::Unavailable(other.to_string()),
                })?;
            let version = &out["TableVersion"];
            let columns = version["Table"]["StorageDescriptor"]["Columns"]
                .as_array()
                .map(|cols| {
                    cols.iter()
                        .map(|c| {
                            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
                            (s("Name").to_string(), s("Type").to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok(TableColumns {
                columns,
                version_id: version["VersionId"].as_str().unwrap_or("").to_string(),
            })
        })
    }
}
