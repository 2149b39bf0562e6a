//! The AWS Glue Data Catalog subset that Firehose's record format
//! conversion reads schemas from: databases, tables and archived table
//! versions of the account's one catalog.
//!
//! Everything lives in one document space of the shared catalog
//! ([`SPACE`]), so a change that touches several entries (DeleteDatabase
//! removing its tables and their versions, UpdateTable archiving the
//! previous version) is one durable transaction. The whole space is held in
//! memory too (a schema catalog is small) and written through: the catalog
//! first, then the memory view, under one lock for all changes, in one
//! blocking task that runs to its end even if the request is dropped.
//!
//! Names are stored lower-cased, as Glue folds database and table names for
//! Hive compatibility, and looked up the same way. Column types are stored
//! as given: Glue accepts any string there, and it is the converter that
//! parses them (`ripstream_convert::hive`) when it reads a table.

pub mod api;
pub mod error;
mod ops;
mod pattern;
mod store;

use std::sync::Arc;

use ripstream_log::Clock;
use ripstream_meta::Catalog;
use ripstream_runtime::ServiceContext;
use tracing::info;

pub use error::{Error, Result};

/// The catalog's document space holding every database, table and table
/// version.
pub const SPACE: &str = "glue/catalog";

/// The Glue service. Cheap to clone.
#[derive(Clone)]
pub struct Glue {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Glue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Glue")
            .field("region", &self.inner.region)
            .field("account", &self.inner.account)
            .finish_non_exhaustive()
    }
}

/// The service's limits. The defaults are AWS Glue's default quotas
/// ("AWS Glue endpoints and quotas"), which AWS raises on request; tests
/// lower them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlueConfig {
    /// Databases per account (AWS: 10,000).
    pub max_databases: usize,
    /// Tables per database (AWS: 200,000).
    pub max_tables_per_database: usize,
    /// Tables per account (AWS: 1,000,000).
    pub max_tables: usize,
    /// Table versions per table, the current one included (AWS: 100,000).
    pub max_versions_per_table: usize,
    /// Table versions per account, current ones included (AWS: 1,000,000).
    pub max_versions: usize,
    /// The largest `TableInput` or `DatabaseInput`, serialized as JSON.
    /// Glue documents limits per member but none for the whole; this
    /// server's own bound, since every version is held in memory.
    pub max_input_bytes: usize,
    /// GetDatabases, GetTables and GetTableVersions end a page early once
    /// its entries pass this many bytes (the page's `NextToken` continues
    /// from there), so a response stays bounded whatever `MaxResults` says.
    pub page_budget_bytes: usize,
}

impl Default for GlueConfig {
    fn default() -> GlueConfig {
        GlueConfig {
            max_databases: 10_000,
            max_tables_per_database: 200_000,
            max_tables: 1_000_000,
            max_versions_per_table: 100_000,
            max_versions: 1_000_000,
            max_input_bytes: 1 << 20,
            page_budget_bytes: 4 << 20,
        }
    }
}

pub(crate) struct Inner {
    pub region: String,
    pub account: String,
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<Catalog>,
    pub config: GlueConfig,
    pub state: Arc<parking_lot::RwLock<store::State>>,
    /// Serializes changes: each reads the state, commits, then updates it.
    /// Owned guards, so a commit keeps it until its memory update is done
    /// even when the request that started it is gone.
    pub control: Arc<tokio::sync::Mutex<()>>,
}

impl Glue {
    /// Opens the service in the server's shared context, loading the
    /// catalog's databases and tables.
    pub fn open_in(ctx: &ServiceContext) -> Result<Glue> {
        Glue::open_with(ctx, GlueConfig::default())
    }

    /// Opens the service with the given limits.
    pub fn open_with(ctx: &ServiceContext, config: GlueConfig) -> Result<Glue> {
        let state = store::State::load(&ctx.catalog)?;
        info!(
            databases = state.databases.len(),
            tables = state.tables.len(),
            "glue data catalog opened"
        );
        Ok(Glue {
            inner: Arc::new(Inner {
                region: ctx.region.clone(),
                account: ctx.account_id.clone(),
                clock: ctx.clock.clone(),
                catalog: ctx.catalog.clone(),
                config,
                state: Arc::new(parking_lot::RwLock::new(state)),
                control: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// The account whose catalog this is (the catalog id).
    pub fn account(&self) -> &str {
        &self.inner.account
    }

    /// `arn:<partition>:glue:<region>:<account>:<resource>`.
    pub fn arn(&self, resource: &str) -> String {
        self.arn_in(&self.inner.account, resource)
    }

    /// The ARN of a resource of another account's catalog (a request's
    /// `CatalogId`), which policies are evaluated on as named.
    pub fn arn_in(&self, account: &str, resource: &str) -> String {
        format!(
            "arn:{}:glue:{}:{account}:{resource}",
            ripstream_iam::partition(&self.inner.region),
            self.inner.region,
        )
    }
}

#[cfg(test)]
mod tests;
