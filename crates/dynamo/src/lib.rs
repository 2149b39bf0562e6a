//! The DynamoDB-compatible subset that lease management needs.
//!
//! The Kinesis Client Library keeps its leases in a DynamoDB table; Ripstream
//! serves the tables itself, on the same port as Kinesis, so a KCL (ours or
//! the official one) needs no other service. Tables and items live in memory
//! in key order and are written through to the metadata store (redb) before
//! a request is acknowledged, so they survive `kill -9`. Every conditional
//! write checks and applies under the table's lock: two writers never both
//! succeed on one condition.
//!
//! Requests arrive as JSON already checked against the DynamoDB service model
//! (types, required members, lengths, enums) by the server; this crate checks
//! what the model cannot say and runs the operation.

pub mod api;
pub mod error;
pub mod expr;
pub mod legacy;
pub mod number;
mod ops;
pub mod table;
pub mod value;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use ripstream_meta::Catalog;

pub use error::DynamoError;
use table::{Table, TableMeta};
use value::item_from_json;

/// Where table descriptions are stored in the metadata store.
const TABLES_SPACE: &str = "dynamodb/tables";

fn items_space(table_id: &str) -> String {
    format!("dynamodb/items/{table_id}")
}

/// Settings of the DynamoDB-compatible service.
#[derive(Debug, Clone)]
pub struct DynamoConfig {
    pub region: String,
    pub account_id: String,
}

/// The DynamoDB-compatible service. Cheap to clone.
#[derive(Clone)]
pub struct Dynamo {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: DynamoConfig,
    catalog: Arc<Catalog>,
    tables: RwLock<BTreeMap<String, Arc<Mutex<Table>>>>,
    /// Serializes CreateTable / DeleteTable / UpdateTable.
    ddl: Mutex<()>,
}

impl std::fmt::Debug for Dynamo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dynamo")
            .field("tables", &self.inner.tables.read().len())
            .finish()
    }
}

impl Dynamo {
    /// Opens the service in the server's shared context: its catalog, region
    /// and account.
    pub fn open_in(ctx: &ripstream_runtime::ServiceContext) -> Result<Dynamo, DynamoError> {
        Dynamo::open(
            ctx.catalog.clone(),
            DynamoConfig {
                region: ctx.region.clone(),
                account_id: ctx.account_id.clone(),
            },
        )
    }

    /// Loads every table from the metadata store.
    pub fn open(catalog: Arc<Catalog>, cfg: DynamoConfig) -> Result<Dynamo, DynamoError> {
        let mut tables = BTreeMap::new();
        for (_, raw) in catalog.documents(TABLES_SPACE)? {
            let meta: TableMeta = serde_json::from_slice(&raw)
                .map_err(|e| DynamoError::failed(format!("corrupt table description: {e}"), e))?;
            let mut table = Table {
                meta,
                items: BTreeMap::new(),
                bytes: 0,
                dropped: false,
            };
            for (key, raw) in catalog.documents(&items_space(&table.meta.id))? {
                let v: serde_json::Value = serde_json::from_slice(&raw)
                    .map_err(|e| DynamoError::failed(format!("corrupt item: {e}"), e))?;
                let item = v
                    .as_object()
                    .map(item_from_json)
                    .transpose()?
                    .unwrap_or_default();
                table.store(key, Some(item));
            }
            tables.insert(table.meta.name.clone(), Arc::new(Mutex::new(table)));
        }
        Ok(Dynamo {
            inner: Arc::new(Inner {
                cfg,
                catalog,
                tables: RwLock::new(tables),
                ddl: Mutex::new(()),
            }),
        })
    }

    /// Runs one operation on a request body already checked against the
    /// service model.
    pub fn call(
        &self,
        op: &str,
        req: &serde_json::Value,
    ) -> Result<serde_json::Value, DynamoError> {
        let empty = serde_json::Map::new();
        let req = req.as_object().unwrap_or(&empty);
        match op {
            "CreateTable" => self.create_table(req),
            "DescribeTable" => self.describe_table(req),
            "DeleteTable" => self.delete_table(req),
            "UpdateTable" => self.update_table(req),
            "ListTables" => self.list_tables(req),
            "GetItem" => self.get_item(req),
            "PutItem" => self.put_item(req),
            "UpdateItem" => self.update_item(req),
            "DeleteItem" => self.delete_item(req),
            "Scan" => self.scan(req),
            "Query" => self.query(req),
            "BatchGetItem" => self.batch_get_item(req),
            "BatchWriteItem" => self.batch_write_item(req),
            "TagResource" => self.tag_resource(req),
            "UntagResource" => self.untag_resource(req),
            "ListTagsOfResource" => self.list_tags_of_resource(req),
            "DescribeTimeToLive" => self.describe_time_to_live(req),
            "UpdateTimeToLive" => self.update_time_to_live(req),
            "DescribeContinuousBackups" => self.describe_continuous_backups(req),
            "UpdateContinuousBackups" => self.update_continuous_backups(req),
            "DescribeLimits" => Ok(serde_json::json!({
                "AccountMaxReadCapacityUnits": 80000, "AccountMaxWriteCapacityUnits": 80000,
                "TableMaxReadCapacityUnits": 40000, "TableMaxWriteCapacityUnits": 40000
            })),
            "DescribeEndpoints" => Ok(serde_json::json!({"Endpoints": []})),
            other => Err(DynamoError::Validation(format!(
                "Operation {other} is not supported by Ripstream's DynamoDB-compatible subset"
            ))),
        }
    }

    /// Whether this subset implements an operation.
    pub fn supports(op: &str) -> bool {
        matches!(
            op,
            "CreateTable"
                | "DescribeTable"
                | "DeleteTable"
                | "UpdateTable"
                | "ListTables"
                | "GetItem"
                | "PutItem"
                | "UpdateItem"
                | "DeleteItem"
                | "Scan"
                | "Query"
                | "BatchGetItem"
                | "BatchWriteItem"
                | "TagResource"
                | "UntagResource"
                | "ListTagsOfResource"
                | "DescribeTimeToLive"
                | "UpdateTimeToLive"
                | "DescribeContinuousBackups"
                | "UpdateContinuousBackups"
                | "DescribeLimits"
                | "DescribeEndpoints"
        )
    }

    /// The ARNs of the tables a request of `op` acts on, for authorization:
    /// one per table (BatchGetItem and BatchWriteItem name several), `*` for
    /// account-wide operations. Each operation reads only the member that
    /// names its tables, the same one it then executes on, and every name is
    /// resolved to its canonical ARN first (a name or ARN that is not this
    /// server's is refused here, before anything is authorized).
    pub fn request_resources(
        &self,
        op: &str,
        req: &serde_json::Value,
    ) -> Result<Vec<String>, DynamoError> {
        let arn = |name: &str| Ok(self.table_arn(&self.canonical_name(name)?));
        let member = |key: &str| {
            req.get(key).and_then(|v| v.as_str()).ok_or_else(|| {
                DynamoError::Validation(format!(
                    "The parameter '{key}' is required but was not present in the request"
                ))
            })
        };
        match op {
            "ListTables" | "DescribeLimits" | "DescribeEndpoints" => Ok(vec!["*".into()]),
            "TagResource" | "UntagResource" | "ListTagsOfResource" => {
                Ok(vec![arn(member("ResourceArn")?)?])
            }
            "BatchGetItem" | "BatchWriteItem" => req
                .get("RequestItems")
                .and_then(|v| v.as_object())
                .map(|items| items.keys().map(|k| arn(k)).collect())
                .unwrap_or_else(|| Ok(Vec::new())),
            // Reading an index is an action on the index, as IAM names it.
            "Query" | "Scan" if req.get("IndexName").is_some() => {
                let index = member("IndexName")?;
                Ok(vec![format!(
                    "{}/index/{index}",
                    arn(member("TableName")?)?
                )])
            }
            _ => Ok(vec![arn(member("TableName")?)?]),
        }
    }

    fn table_arn(&self, name: &str) -> String {
        let cfg = &self.inner.cfg;
        format!(
            "arn:{}:dynamodb:{}:{}:table/{name}",
            ripstream_iam::partition(&cfg.region),
            cfg.region,
            cfg.account_id
        )
    }

    /// A table name, or this server's ARN of one, as the plain name. Anything
    /// else (another account or region, a malformed name) is refused, so the
    /// table a request reaches is always the one it was authorized for.
    pub(crate) fn canonical_name(&self, name: &str) -> Result<String, DynamoError> {
        let plain = match name.strip_prefix(&self.table_arn("")) {
            Some(rest) => rest,
            None if name.starts_with("arn:") => {
                return Err(DynamoError::ResourceNotFound(format!(
                    "Requested resource not found: Table: {name} not found"
                )));
            }
            None => name,
        };
        let rule = if plain.len() < 3 {
            Some("Member must have length greater than or equal to 3")
        } else if plain.len() > 255 {
            Some("Member must have length less than or equal to 255")
        } else if !plain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            Some("Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")
        } else {
            None
        };
        if let Some(rule) = rule {
            return Err(DynamoError::Validation(format!(
                "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: {rule}"
            )));
        }
        Ok(plain.to_string())
    }

    /// A table for a control-plane operation, whose not-found message names it.
    fn described_table(&self, name: &str) -> Result<Arc<Mutex<Table>>, DynamoError> {
        self.table(name).map_err(|e| match e {
            DynamoError::ResourceNotFound(_) => DynamoError::ResourceNotFound(format!(
                "Requested resource not found: Table: {name} not found"
            )),
            other => other,
        })
    }

    fn table(&self, name: &str) -> Result<Arc<Mutex<Table>>, DynamoError> {
        let name = self.canonical_name(name)?;
        self.inner
            .tables
            .read()
            .get(&name)
            .cloned()
            .ok_or_else(DynamoError::not_found)
    }
}

#[cfg(test)]
mod tests;
