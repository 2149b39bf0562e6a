//! Glue behind the front door: the operation table, the [`Spec`], and
//! authorization of each operation's resources before it acts.

use std::sync::Arc;

use http::StatusCode;
use ripstream_api::{BoxError, CallFuture, Caller, Reply, Request, Spec};
use serde_json::Value;

use crate::Glue;
use crate::error::Error;
use crate::ops::{batch_names, required_name, table_name_of, text};

/// The vendored botocore model of Glue (`glue/2017-03-31`), trimmed to the
/// operations served by `model/trim.py`.
pub static MODEL: &str = include_str!("../model/glue-2017-03-31.json");

/// The operations this service serves, as the model names them (all the
/// trimmed model has).
pub const OPERATIONS: &[&str] = &[
    "CreateDatabase",
    "GetDatabase",
    "GetDatabases",
    "UpdateDatabase",
    "DeleteDatabase",
    "CreateTable",
    "GetTable",
    "GetTables",
    "UpdateTable",
    "DeleteTable",
    "BatchDeleteTable",
    "GetTableVersion",
    "GetTableVersions",
    "DeleteTableVersion",
];

/// Glue as the front door mounts it.
#[derive(Debug, Clone)]
pub struct GlueApi {
    service: Glue,
    spec: Arc<Spec>,
}

impl GlueApi {
    pub fn new(service: Glue) -> GlueApi {
        GlueApi {
            spec: Arc::new(
                Spec::from_model(MODEL, "glue").expect("the vendored model has metadata"),
            ),
            service,
        }
    }

    pub fn service(&self) -> &Glue {
        &self.service
    }

    /// The resources an operation acts on, as Glue's IAM documentation
    /// lists them: the catalog, the database and, for table operations, the
    /// table (`table/<db>/*` for GetTables and DeleteDatabase, which act on
    /// every table of the database; DeleteDatabase its functions too;
    /// `database/*` for GetDatabases). Names are folded as they are stored,
    /// and the account is the one `CatalogId` names.
    pub fn resources(&self, operation: &str, input: &Value) -> Result<Vec<String>, Error> {
        let account = text(input, "CatalogId").unwrap_or(self.service.account());
        let arn = |resource: &str| self.service.arn_in(account, resource);
        let catalog = arn("catalog");
        let db_of = |key: &str, what: &str| required_name(input, key, what);
        Ok(match operation {
            "GetDatabases" => vec![catalog, arn("database/*")],
            "CreateDatabase" => {
                let db = required_name(
                    input.get("DatabaseInput").unwrap_or(&Value::Null),
                    "Name",
                    "DatabaseInput.Name",
                )?;
                vec![catalog, arn(&format!("database/{db}"))]
            }
            "GetDatabase" | "UpdateDatabase" => {
                let db = db_of("Name", "Name")?;
                vec![catalog, arn(&format!("database/{db}"))]
            }
            "DeleteDatabase" => {
                let db = db_of("Name", "Name")?;
                vec![
                    catalog,
                    arn(&format!("database/{db}")),
                    arn(&format!("table/{db}/*")),
                    arn(&format!("userDefinedFunction/{db}/*")),
                ]
            }
            "GetTables" => {
                let db = db_of("DatabaseName", "DatabaseName")?;
                vec![
                    catalog,
                    arn(&format!("database/{db}")),
                    arn(&format!("table/{db}/*")),
                ]
            }
            "BatchDeleteTable" => {
                let db = db_of("DatabaseName", "DatabaseName")?;
                let mut out = vec![catalog, arn(&format!("database/{db}"))];
                let mut tables: Vec<String> = batch_names(input)?
                    .into_iter()
                    .map(|(_, t)| arn(&format!("table/{db}/{t}")))
                    .collect();
                tables.sort();
                tables.dedup();
                out.extend(tables);
                out
            }
            _ => {
                let db = db_of("DatabaseName", "DatabaseName")?;
                let table = table_name_of(operation, input)?;
                vec![
                    catalog,
                    arn(&format!("database/{db}")),
                    arn(&format!("table/{db}/{table}")),
                ]
            }
        })
    }

    async fn run(&self, request: Request<'_>) -> Result<Reply, BoxError> {
        let op = request.operation;
        let input = request.input;
        if !OPERATIONS.contains(&op) {
            return Err(Box::new(ripstream_api::Refused {
                code: "UnknownOperationException",
                status: StatusCode::BAD_REQUEST,
                message: format!("Operation {op} is not supported by this version of Ripstream."),
            }));
        }
        request.authorize.authorize(&self.resources(op, &input)?)?;
        let svc = &self.service;
        if let Some(id) = text(&input, "CatalogId")
            && id != svc.account()
        {
            // Another account's catalog is reachable only where that
            // account's catalog policy grants it; this server holds one
            // account's catalog and no other grants anything.
            return Err(Error::AccessDenied(format!(
                "Cross-account access to catalog {id} is not allowed: this server holds only the Data Catalog of account {}.",
                svc.account()
            ))
            .into());
        }
        let caller = match request.caller {
            Caller::Principal { arn, .. } => arn.to_string(),
            Caller::Anonymous => format!(
                "arn:{}:iam::{}:root",
                ripstream_iam::partition(&svc.inner.region),
                svc.account()
            ),
        };
        let out = match op {
            "CreateDatabase" => svc.create_database(input).await?,
            "GetDatabase" => svc.get_database(input).await?,
            "GetDatabases" => svc.get_databases(input).await?,
            "UpdateDatabase" => svc.update_database(input).await?,
            "DeleteDatabase" => svc.delete_database(input).await?,
            "CreateTable" => svc.create_table(input, &caller).await?,
            "GetTable" => svc.get_table(input).await?,
            "GetTables" => svc.get_tables(input).await?,
            "UpdateTable" => svc.update_table(input).await?,
            "DeleteTable" => svc.delete_table(input).await?,
            "BatchDeleteTable" => svc.batch_delete_table(input).await?,
            "GetTableVersion" => svc.get_table_version(input).await?,
            "GetTableVersions" => svc.get_table_versions(input).await?,
            _ => svc.delete_table_version(input).await?,
        };
        let body = serde_json::to_vec(&out).map_err(Error::internal)?;
        Ok(Reply::Json(body))
    }
}

impl ripstream_api::Service for GlueApi {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn supports(&self, operation: &str) -> bool {
        OPERATIONS.contains(&operation)
    }

    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a> {
        Box::pin(self.run(request))
    }
}
